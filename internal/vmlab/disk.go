package vmlab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// RootFS is a copy of the root file system of a VM's disk, to read what
// the machine's Ignition wrote there from the test's side, without
// mounting anything on the host: the ext4 partition is copied out, its
// journal replayed on the copy (what the OS wrote may still be only in
// the journal while it runs), and files are read with debugfs.
type RootFS struct {
	img string
}

// OpenRootFS copies the root partition (partition 2 of the MBR, as
// BuildOSImage lays it out) of the raw disk image disk into dir.
func OpenRootFS(ctx context.Context, disk, dir string) (*RootFS, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		return nil, fmt.Errorf("%s: %w", disk, err)
	}
	entry := mbr[446+16 : 446+32]
	if mbr[510] != 0x55 || mbr[511] != 0xaa || entry[4] != 0x83 {
		return nil, fmt.Errorf("%s has no Linux partition 2 in its MBR: not the test OS image", disk)
	}
	start := int64(binary.LittleEndian.Uint32(entry[8:])) * 512
	size := int64(binary.LittleEndian.Uint32(entry[12:])) * 512
	img := filepath.Join(dir, "root.ext4")
	out, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(out, io.NewSectionReader(f, start, size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// e2fsck's exit status 1 is "errors corrected": the journal replayed.
	cmd := exec.CommandContext(ctx, "e2fsck", "-p", "-E", "journal_only", img)
	if out, err := cmd.CombinedOutput(); err != nil && cmd.ProcessState.ExitCode() != 1 {
		return nil, fmt.Errorf("e2fsck -E journal_only: %v\n%s", err, out)
	}
	return &RootFS{img: img}, nil
}

// RootFile is one file of a RootFS.
type RootFile struct {
	Data     []byte
	Mode     fs.FileMode // permission bits
	UID, GID int
}

var (
	statMode  = regexp.MustCompile(`Mode:\s+0?([0-7]{3,4})`)
	statOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
)

// File reads the regular file at path (absolute, in the root).
func (r *RootFS) File(path string) (*RootFile, error) {
	st, err := r.debugfs("stat " + path)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(st, "Type: regular") {
		return nil, fmt.Errorf("%s: not a regular file in the root file system:\n%s", path, st)
	}
	m, o := statMode.FindStringSubmatch(st), statOwner.FindStringSubmatch(st)
	if m == nil || o == nil {
		return nil, fmt.Errorf("%s: debugfs stat says no mode or owner:\n%s", path, st)
	}
	f := &RootFile{}
	mode, _ := strconv.ParseUint(m[1], 8, 32)
	f.Mode = fs.FileMode(mode) & fs.ModePerm
	f.UID, _ = strconv.Atoi(o[1])
	f.GID, _ = strconv.Atoi(o[2])
	data, err := r.debugfs("cat " + path)
	if err != nil {
		return nil, err
	}
	f.Data = []byte(data)
	return f, nil
}

// debugfs runs one read-only debugfs request. debugfs exits 0 when a
// request fails and says so on stderr: any stderr beyond its banner is
// an error.
func (r *RootFS) debugfs(request string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "debugfs", "-R", request, r.img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var errs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			errs = append(errs, l)
		}
	}
	if err != nil || len(errs) > 0 {
		return "", fmt.Errorf("debugfs -R %q: %v %s", request, err, strings.Join(errs, "; "))
	}
	return string(out), nil
}

var fastLink = regexp.MustCompile(`Fast link dest: "([^"]*)"`)

// Link is the target of the symbolic link at path.
func (r *RootFS) Link(path string) (string, error) {
	st, err := r.debugfs("stat " + path)
	if err != nil {
		return "", err
	}
	if !strings.Contains(st, "Type: symlink") {
		return "", fmt.Errorf("%s: not a symbolic link in the root file system:\n%s", path, st)
	}
	if m := fastLink.FindStringSubmatch(st); m != nil {
		return m[1], nil
	}
	// A target too long for the inode is the link's content.
	return r.debugfs("cat " + path)
}
