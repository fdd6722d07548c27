package artifact

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// ErrNoSpace: the artifact would not fit the cache (its quota, or the
// disk's free space). Checked before a transfer starts.
var ErrNoSpace = errors.New("artifact does not fit the cache")

// ErrDigest: the bytes do not have the digest they must have. Nothing is stored.
var ErrDigest = errors.New("digest mismatch")

// The cache's two directories, below its root.
const (
	completeDir = "sha256"
	partialDir  = "partial"
)

// Cache is one replica's content-addressed store, in
// <dir>/sha256/<hex> (complete, verified files, read-only) and
// <dir>/partial/<key> (transfers under way, kept across restarts so that
// they resume).
//
// Every file is reached through an os.Root on dir, and every name joined
// into a path has passed CheckName or CheckSHA256, so nothing outside dir
// is ever read, written or removed. What the cache holds is kept in
// memory (Has, Open and Held are on every boot request's path); the disk
// is only read at open.
type Cache struct {
	dir   string
	root  *os.Root
	quota int64
	// free returns the bytes the disk holding dir has free for us; a test
	// makes the disk small.
	free func() (int64, error)

	mu sync.Mutex
	// complete: every file in sha256/, by digest. A file found at open is
	// not verified until VerifyAll has rehashed it; only verified files
	// are served.
	complete map[string]*completeFile
	// partials: the size of every partial file, by key.
	partials map[string]int64
	// writing: the keys with an open Partial (one transfer per key).
	writing map[string]bool
	// used: bytes of complete and partial files together.
	used int64
}

type completeFile struct {
	size     int64
	verified bool
}

// OpenCache opens (creating it) the cache in dir. quota bounds the bytes
// of complete and partial files together; 0: only the disk's free space.
// Files found complete are verified again (their SHA-256 recomputed) before
// Has reports them; VerifyAll does that.
func OpenCache(dir string, quota int64) (*Cache, error) {
	if quota < 0 {
		return nil, fmt.Errorf("artifact cache %s: quota %d is negative", dir, quota)
	}
	for _, d := range []string{dir, filepath.Join(dir, completeDir), filepath.Join(dir, partialDir)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("artifact cache: cannot create %s: %w", d, err)
		}
	}
	// Refuse a directory we cannot write now, rather than at the first
	// download: a probe file in each directory we write to.
	for _, d := range []string{completeDir, partialDir} {
		probe, err := os.CreateTemp(filepath.Join(dir, d), ".probe-*")
		if err != nil {
			return nil, fmt.Errorf("artifact cache %s is not writable: %w", filepath.Join(dir, d), err)
		}
		probe.Close()
		if err := os.Remove(probe.Name()); err != nil {
			return nil, fmt.Errorf("artifact cache %s is not writable: %w", filepath.Join(dir, d), err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	c := &Cache{
		dir:      dir,
		root:     root,
		quota:    quota,
		complete: map[string]*completeFile{},
		partials: map[string]int64{},
		writing:  map[string]bool{},
	}
	c.free = c.diskFree
	if err := c.scan(); err != nil {
		root.Close()
		return nil, err
	}
	return c, nil
}

// scan reads what the directories hold. Files whose names the cache
// would not have made (a stray temporary file, something an operator put
// there) are left alone and not counted.
func (c *Cache) scan() error {
	for _, d := range []string{completeDir, partialDir} {
		entries, err := fs.ReadDir(c.root.FS(), d)
		if err != nil {
			return fmt.Errorf("artifact cache: %w", err)
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			name := e.Name()
			switch {
			case d == completeDir && CheckSHA256(name) == nil:
				c.complete[name] = &completeFile{size: info.Size()}
			case d == partialDir && CheckName(name) == nil:
				c.partials[name] = info.Size()
			default:
				continue
			}
			c.used += info.Size()
		}
	}
	return nil
}

// VerifyAll rehashes every complete file found at open, removes those
// whose content does not match their name, and returns the digests held.
//
// held is complete even when err is not nil: err (errors.Join of one
// error per file) says which files were removed because their content no
// longer matches their name (errors.Is(err, ErrDigest)) and which could
// not be read (kept, not served). Log it and go on.
func (c *Cache) VerifyAll() (held []string, err error) {
	c.mu.Lock()
	var todo []string
	for sum, f := range c.complete {
		if !f.verified {
			todo = append(todo, sum)
		}
	}
	c.mu.Unlock()
	slices.Sort(todo)

	var errs []error
	for _, want := range todo {
		// Hashing a large image takes a while: not under the lock.
		got, err := c.hashFile(completeDir + "/" + want)
		c.mu.Lock()
		f, ok := c.complete[want]
		switch {
		case !ok || f.verified:
			// Removed or replaced by a verified commit meanwhile.
		case err != nil:
			errs = append(errs, fmt.Errorf("artifact cache: cannot verify %s, not serving it: %w", want, err))
		case got != want:
			if rerr := c.root.Remove(completeDir + "/" + want); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("artifact cache: %s/%s has sha256 %s: %w; removing it failed: %v", completeDir, want, got, ErrDigest, rerr))
			} else {
				errs = append(errs, fmt.Errorf("artifact cache: removed %s/%s: its content has sha256 %s (%w)", completeDir, want, got, ErrDigest))
			}
			delete(c.complete, want)
			c.used -= f.size
		default:
			f.verified = true
		}
		c.mu.Unlock()
	}
	return c.Held(), errors.Join(errs...)
}

func (c *Cache) hashFile(name string) (string, error) {
	f, err := c.root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Has reports whether verified bytes of sha256hex are held.
func (c *Cache) Has(sha256hex string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.complete[sha256hex]
	return ok && f.verified
}

// Open opens the verified file of sha256hex for serving (os.ErrNotExist
// when not held).
func (c *Cache) Open(sha256hex string) (*os.File, error) {
	if !c.Has(sha256hex) {
		return nil, fmt.Errorf("artifact cache: %s: %w", clipDigest(sha256hex), os.ErrNotExist)
	}
	return c.root.Open(completeDir + "/" + sha256hex)
}

// Held lists the digests of the verified files held.
func (c *Cache) Held() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := make([]string, 0, len(c.complete))
	for sum, f := range c.complete {
		if f.verified {
			held = append(held, sum)
		}
	}
	slices.Sort(held)
	return held
}

// Used is the bytes taken by complete and partial files.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// Fits returns ErrNoSpace (wrapped, saying quota or disk and the numbers)
// unless size more bytes fit both the quota and the disk's free space.
func (c *Cache) Fits(size int64) error {
	if size < 0 {
		return fmt.Errorf("artifact cache: negative size %d", size)
	}
	c.mu.Lock()
	used := c.used
	c.mu.Unlock()
	if c.quota > 0 && size > c.quota-used {
		return fmt.Errorf("%w: %d bytes more would exceed the cache quota of %d bytes (%d in use)", ErrNoSpace, size, c.quota, used)
	}
	free, err := c.free()
	if err != nil {
		return fmt.Errorf("artifact cache: free space of %s: %w", c.dir, err)
	}
	if size > free-minFree {
		return fmt.Errorf("%w: %d bytes needed, the disk holding %s has %d bytes free (of which %d are kept free)", ErrNoSpace, size, c.dir, free, int64(minFree))
	}
	return nil
}

// diskFree is the bytes an unprivileged writer may still use on the disk
// holding the cache (what df shows as available).
func (c *Cache) diskFree() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// release gives back n bytes reserved but not written.
func (c *Cache) release(n int64) {
	c.mu.Lock()
	c.used -= n
	c.mu.Unlock()
}

// reserve counts n more bytes written to a partial file, refusing them
// when they would exceed the quota (a server that sends more than it
// announced, or a length not known in advance).
func (c *Cache) reserve(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.quota > 0 && n > c.quota-c.used {
		return fmt.Errorf("%w: %d bytes more would exceed the cache quota of %d bytes (%d in use)", ErrNoSpace, n, c.quota, c.used)
	}
	c.used += n
	return nil
}

// Partial is a transfer under way. Its bytes so far stay on disk under
// key (a name or digest, checked by CheckName/CheckSHA256) until Commit or
// Discard, so a transfer cut short (a broken connection, a restart)
// resumes from Size().
//
// A Partial is used by one goroutine at a time.
type Partial struct {
	c    *Cache
	key  string
	path string // below the cache's root
	f    *os.File
	size int64
	h256 hash.Hash
	h512 hash.Hash
	// hashes writes to both hashes: every byte written to the file goes
	// through it, so the digests are ready when the transfer ends.
	hashes io.Writer
	done   bool // committed, discarded or closed
	// unchecked: bytes written since the disk's free space was last
	// looked at.
	unchecked int64
}

// The disk's free space is looked at every freeCheckEvery bytes written,
// and a download stops (ErrNoSpace) rather than leave less than minFree.
const (
	freeCheckEvery = 16 << 20
	minFree        = 64 << 20
)

// Begin opens (or reopens, to resume) the partial file of key.
func (c *Cache) Begin(key string) (*Partial, error) {
	if err := CheckName(key); err != nil {
		return nil, fmt.Errorf("artifact cache: partial key %q: %w", clipDigest(key), err)
	}
	c.mu.Lock()
	if c.writing[key] {
		c.mu.Unlock()
		return nil, fmt.Errorf("artifact cache: a transfer of %s is already under way", key)
	}
	c.writing[key] = true
	c.mu.Unlock()

	p := &Partial{c: c, key: key, path: partialDir + "/" + key, h256: sha256.New(), h512: sha512.New()}
	p.hashes = io.MultiWriter(p.h256, p.h512)
	f, err := c.root.OpenFile(p.path, os.O_RDWR|os.O_CREATE, 0o640)
	if err == nil {
		p.f = f
		// Resuming: the digests must cover the bytes already there.
		p.size, err = io.Copy(p.hashes, f)
	}
	if err != nil {
		if p.f != nil {
			p.f.Close()
		}
		c.mu.Lock()
		delete(c.writing, key)
		c.mu.Unlock()
		return nil, fmt.Errorf("artifact cache: partial %s: %w", key, err)
	}
	c.mu.Lock()
	c.used += p.size - c.partials[key]
	c.partials[key] = p.size
	c.mu.Unlock()
	return p, nil
}

// Size is the bytes already written.
func (p *Partial) Size() int64 { return p.size }

// Write appends.
func (p *Partial) Write(b []byte) (int, error) {
	if p.done {
		return 0, fmt.Errorf("artifact cache: partial %s: %w", p.key, os.ErrClosed)
	}
	if err := p.c.reserve(int64(len(b))); err != nil {
		return 0, err
	}
	// A body of unknown length (chunked, or endless) was never checked
	// against the disk: check again every few MiB, keeping a reserve free
	// (the cache may share its disk with etcd's data).
	p.unchecked += int64(len(b))
	if p.unchecked >= freeCheckEvery {
		p.unchecked = 0
		if free, err := p.c.free(); err == nil && free < minFree+int64(len(b)) {
			p.c.release(int64(len(b)))
			return 0, fmt.Errorf("%w: the disk holding %s is down to %d bytes free (at least %d are kept free)", ErrNoSpace, p.c.dir, free, int64(minFree))
		}
	}
	n, err := p.f.Write(b)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		err = fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	// Hash exactly what reached the file, also after a short write.
	p.hashes.Write(b[:n])
	p.size += int64(n)
	p.c.mu.Lock()
	p.c.used -= int64(len(b) - n) // reserved but not written
	p.c.partials[p.key] = p.size
	p.c.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("artifact cache: partial %s: %w", p.key, err)
	}
	return n, nil
}

// Hashes returns the SHA-256 and SHA-512 (hex) of everything written so
// far (rehashing a resumed file's earlier bytes once, when it was reopened).
func (p *Partial) Hashes() (sha256hex, sha512hex string) {
	return hex.EncodeToString(p.h256.Sum(nil)), hex.EncodeToString(p.h512.Sum(nil))
}

// Reader reads the bytes written so far from the start (for checking a
// detached signature once the transfer is complete).
func (p *Partial) Reader() (io.ReadCloser, error) {
	f, err := p.c.root.Open(p.path)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: partial %s: %w", p.key, err)
	}
	// Bytes appended after this call are not part of what was asked for.
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, p.size), f}, nil
}

// reset empties the file to start the transfer over (the server sent the
// whole file, or another version of it).
func (p *Partial) reset() error {
	if p.done {
		return fmt.Errorf("artifact cache: partial %s: %w", p.key, os.ErrClosed)
	}
	if err := p.f.Truncate(0); err != nil {
		return fmt.Errorf("artifact cache: partial %s: %w", p.key, err)
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("artifact cache: partial %s: %w", p.key, err)
	}
	p.h256.Reset()
	p.h512.Reset()
	p.c.mu.Lock()
	p.c.used -= p.size
	p.c.partials[p.key] = 0
	p.c.mu.Unlock()
	p.size = 0
	return nil
}

// Commit fsyncs the file, checks that its SHA-256 is want (else removes
// it and returns ErrDigest wrapped with both digests), renames it to
// sha256/<want>, fsyncs the directory. After Commit, Has(want) is true.
func (p *Partial) Commit(want string) error {
	if p.done {
		return fmt.Errorf("artifact cache: partial %s: %w", p.key, os.ErrClosed)
	}
	if err := CheckSHA256(want); err != nil {
		p.Discard()
		return fmt.Errorf("artifact cache: committing %s: %w", p.key, err)
	}
	got, _ := p.Hashes()
	if got != want {
		p.Discard()
		return fmt.Errorf("%w: %s has sha256 %s, want %s; nothing was kept", ErrDigest, p.key, got, want)
	}
	// Read-only: a verified file is never written again. Durable before
	// it gets the name that says it is verified.
	err := p.f.Chmod(0o444)
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	p.f = nil
	if err != nil {
		p.Discard()
		return fmt.Errorf("artifact cache: committing %s: %w", p.key, err)
	}
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	p.done = true
	delete(c.writing, p.key)
	delete(c.partials, p.key)
	if f, ok := c.complete[want]; ok && f.verified {
		// Another name with the same bytes got there first.
		c.used -= p.size
		if err := c.root.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("artifact cache: removing %s: %w", p.path, err)
		}
		return nil
	}
	if err := c.root.Rename(p.path, completeDir+"/"+want); err != nil {
		c.used -= p.size
		c.root.Remove(p.path)
		return fmt.Errorf("artifact cache: committing %s: %w", p.key, err)
	}
	if old, ok := c.complete[want]; ok {
		c.used -= old.size // an unverified file of that name, replaced
	}
	c.complete[want] = &completeFile{size: p.size, verified: true}
	// The rename is durable once both directories are.
	if err := c.syncDir(completeDir); err != nil {
		return err
	}
	return c.syncDir(partialDir)
}

func (c *Cache) syncDir(name string) error {
	d, err := c.root.Open(name)
	if err != nil {
		return fmt.Errorf("artifact cache: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("artifact cache: fsync %s: %w", name, err)
	}
	return nil
}

// Discard removes the partial file (a refused download keeps nothing).
func (p *Partial) Discard() error {
	if p.done {
		return nil
	}
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	p.done = true
	delete(c.writing, p.key)
	c.used -= c.partials[p.key]
	delete(c.partials, p.key)
	if err := c.root.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact cache: discarding %s: %w", p.key, err)
	}
	return nil
}

// Close keeps the partial file for a later resume.
func (p *Partial) Close() error {
	if p.done {
		return nil
	}
	p.done = true
	err := p.f.Close()
	p.f = nil
	p.c.mu.Lock()
	delete(p.c.writing, p.key)
	p.c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("artifact cache: partial %s: %w", p.key, err)
	}
	return nil
}

// Remove deletes the verified file of sha256hex (an artifact no longer
// in the catalogue). Removing what is not held is not an error.
func (c *Cache) Remove(sha256hex string) error {
	if err := CheckSHA256(sha256hex); err != nil {
		return fmt.Errorf("artifact cache: remove %q: %w", clipDigest(sha256hex), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.complete[sha256hex]
	if !ok {
		return nil
	}
	if err := c.root.Remove(completeDir + "/" + sha256hex); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact cache: %w", err)
	}
	delete(c.complete, sha256hex)
	c.used -= f.size
	return nil
}

// RemovePartial deletes a partial file by key. A transfer under way is
// not interrupted: that is an error. Removing what is not there is not.
func (c *Cache) RemovePartial(key string) error {
	if err := CheckName(key); err != nil {
		return fmt.Errorf("artifact cache: remove partial %q: %w", clipDigest(key), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing[key] {
		return fmt.Errorf("artifact cache: partial %s is being written", key)
	}
	size, ok := c.partials[key]
	if !ok {
		return nil
	}
	if err := c.root.Remove(partialDir + "/" + key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifact cache: %w", err)
	}
	delete(c.partials, key)
	c.used -= size
	return nil
}

// Partials lists the keys of the partial files.
func (c *Cache) Partials() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.partials))
	for k := range c.partials {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// clipDigest keeps a refused argument (it may come from a peer's request
// path) short and printable in an error.
func clipDigest(s string) string {
	return hostile.Clip(hostile.Escape(s), 80)
}
