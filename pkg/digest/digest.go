// Package digest identifies the local files a replica serves by their
// SHA-256, computed once at start: the digests are announced to the other
// replicas (so that hand-copied files that differ are caught), sent as
// ETags (so that every replica answers the same for the same bytes), and
// rendered into the first-stage script (so that the installer checks what
// it wrote). A file is streamed through the hash, never held in memory:
// an OS image may be gigabytes.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// File is one file as it was hashed.
type File struct {
	Key    string // the configuration key that names it: cluster.install.image
	Name   string // its name in its directory
	SHA256 string // lower-case hex
	Size   int64
	// ModTime and Inode tell a file changed on disk since it was hashed
	// without reading it again.
	ModTime time.Time
	Inode   uint64
}

// Of hashes the file name under root, for the configuration key key.
// A file that changes while it is hashed is an error: its digest would
// describe no version of it.
func Of(root *os.Root, key, name string) (File, error) {
	f, err := root.Open(name)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", key, err)
	}
	if !before.Mode().IsRegular() {
		return File{}, fmt.Errorf("%s: %s is not a regular file", key, name)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("%s: reading %s: %w", key, name, err)
	}
	after, err := f.Stat()
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", key, err)
	}
	d := File{Key: key, Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, ModTime: before.ModTime(), Inode: inode(before)}
	if d.Changed(after) || n != before.Size() {
		return File{}, fmt.Errorf("%s: %s changed while it was being hashed; start again once it is complete", key, name)
	}
	return d, nil
}

// Changed reports whether st (of the file now) is not the file that was
// hashed: another inode (replaced), size or modification time. A rewrite
// in place that keeps size and modification time is not seen.
func (f File) Changed(st os.FileInfo) bool {
	return inode(st) != f.Inode || st.Size() != f.Size || !st.ModTime().Equal(f.ModTime)
}

// ETag is the entity tag of the file: the same on every replica for the
// same bytes (the format of artifact.ETag).
func (f File) ETag() string { return `"sha256:` + f.SHA256 + `"` }

func inode(st os.FileInfo) uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Ino
	}
	return 0
}

// Set is the files a replica serves, by configuration key.
type Set map[string]File

// Digests are the SHA-256 of each file, by configuration key: what a
// replica announces.
func (s Set) Digests() map[string]string {
	if len(s) == 0 {
		return nil
	}
	out := make(map[string]string, len(s))
	for k, f := range s {
		out[k] = f.SHA256
	}
	return out
}

// Named is the file of the set whose name is name (and whose key is one
// of keys), if any.
func (s Set) Named(name string, keys ...string) (File, bool) {
	for _, k := range keys {
		if f, ok := s[k]; ok && f.Name == name {
			return f, true
		}
	}
	return File{}, false
}
