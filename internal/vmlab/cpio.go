package vmlab

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// initramfs is the content of a Linux initramfs: a gzip-compressed cpio
// archive in the "newc" format, which the kernel unpacks into its first
// root file system. Writing it here rather than with cpio(1) means no
// device nodes have to be made on the build machine (mknod needs root and
// leaves traces): /dev/console is just an archive entry.
type initramfs struct {
	entries map[string]cpioEntry
}

type cpioEntry struct {
	mode         uint32 // file type and permissions
	data         []byte // file content, or the symlink's target
	major, minor uint32 // device nodes
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func newInitramfs() *initramfs { return &initramfs{entries: map[string]cpioEntry{}} }

// dir adds a directory and its parents.
func (r *initramfs) dir(name string) {
	for name != "." && name != "/" && name != "" {
		if _, ok := r.entries[name]; !ok {
			r.entries[name] = cpioEntry{mode: sIFDIR | 0o755}
		}
		name = path.Dir(name)
	}
}

// file adds a regular file (and its directory).
func (r *initramfs) file(name string, perm uint32, data []byte) {
	r.dir(path.Dir(name))
	r.entries[name] = cpioEntry{mode: sIFREG | perm, data: data}
}

// copyFile adds a file read from the build machine.
func (r *initramfs) copyFile(name string, perm uint32, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	r.file(name, perm, data)
	return nil
}

func (r *initramfs) symlink(name, target string) {
	r.dir(path.Dir(name))
	r.entries[name] = cpioEntry{mode: sIFLNK | 0o777, data: []byte(target)}
}

func (r *initramfs) charDev(name string, perm, major, minor uint32) {
	r.dir(path.Dir(name))
	r.entries[name] = cpioEntry{mode: sIFCHR | perm, major: major, minor: minor}
}

// write writes the gzip-compressed archive, entries sorted so that every
// directory comes before its content and the output is reproducible.
func (r *initramfs) write(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, n := range names {
		e := r.entries[n]
		if err := writeCpioEntry(zw, ino, n, e); err != nil {
			return err
		}
		ino++
	}
	if err := writeCpioEntry(zw, 0, "TRAILER!!!", cpioEntry{}); err != nil {
		return err
	}
	return zw.Close()
}

// writeCpioEntry writes one newc header, the name and the data, each
// padded to 4 bytes. Owner is root, mtime 0.
func writeCpioEntry(w io.Writer, ino uint32, name string, e cpioEntry) error {
	name = strings.TrimPrefix(name, "/")
	nlink := uint32(1)
	if e.mode&sIFDIR == sIFDIR {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8+len(e.data)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, e.data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
