package artifact

import (
	"errors"
	"io"
	"os"
)

// ErrNoSpace: the artifact would not fit the cache (its quota, or the
// disk's free space). Checked before a transfer starts.
var ErrNoSpace = errors.New("artifact does not fit the cache")

// ErrDigest: the bytes do not have the digest they must have. Nothing is stored.
var ErrDigest = errors.New("digest mismatch")

// Cache is one replica's content-addressed store, in
// <dir>/sha256/<hex> (complete, verified files, read-only) and
// <dir>/partial/<key> (transfers under way, kept across restarts so that
// they resume).
type Cache struct {
	// SKELETON: helper A fills this in.
}

// OpenCache opens (creating it) the cache in dir. quota bounds the bytes
// of complete and partial files together; 0: only the disk's free space.
// Files found complete are verified again (their SHA-256 recomputed) before
// Has reports them; VerifyAll does that.
func OpenCache(dir string, quota int64) (*Cache, error) { panic("skeleton") }

// VerifyAll rehashes every complete file found at open, removes those
// whose content does not match their name, and returns the digests held.
func (c *Cache) VerifyAll() ([]string, error) { panic("skeleton") }

// Has reports whether verified bytes of sha256hex are held.
func (c *Cache) Has(sha256hex string) bool { panic("skeleton") }

// Open opens the verified file of sha256hex for serving (os.ErrNotExist
// when not held).
func (c *Cache) Open(sha256hex string) (*os.File, error) { panic("skeleton") }

// Held lists the digests of the verified files held.
func (c *Cache) Held() []string { panic("skeleton") }

// Used is the bytes taken by complete and partial files.
func (c *Cache) Used() int64 { panic("skeleton") }

// Fits returns ErrNoSpace (wrapped, saying quota or disk and the numbers)
// unless size more bytes fit both the quota and the disk's free space.
func (c *Cache) Fits(size int64) error { panic("skeleton") }

// Partial is a transfer under way. Its bytes so far stay on disk under
// key (a name or digest, checked by CheckName/CheckSHA256) until Commit or
// Discard, so a transfer cut short (a broken connection, a restart)
// resumes from Size().
type Partial struct {
	// SKELETON
}

// Begin opens (or reopens, to resume) the partial file of key.
func (c *Cache) Begin(key string) (*Partial, error) { panic("skeleton") }

// Size is the bytes already written.
func (p *Partial) Size() int64 { panic("skeleton") }

// Write appends.
func (p *Partial) Write(b []byte) (int, error) { panic("skeleton") }

// Hashes returns the SHA-256 and SHA-512 (hex) of everything written so
// far (rehashing a resumed file's earlier bytes once, when it was reopened).
func (p *Partial) Hashes() (sha256hex, sha512hex string) { panic("skeleton") }

// Reader reads the bytes written so far from the start (for checking a
// detached signature once the transfer is complete).
func (p *Partial) Reader() (io.ReadCloser, error) { panic("skeleton") }

// Commit fsyncs the file, checks that its SHA-256 is want (else removes
// it and returns ErrDigest wrapped with both digests), renames it to
// sha256/<want>, fsyncs the directory. After Commit, Has(want) is true.
func (p *Partial) Commit(want string) error { panic("skeleton") }

// Discard removes the partial file (a refused download keeps nothing).
func (p *Partial) Discard() error { panic("skeleton") }

// Close keeps the partial file for a later resume.
func (p *Partial) Close() error { panic("skeleton") }

// Remove deletes the verified file of sha256hex (an artifact no longer
// in the catalogue).
func (c *Cache) Remove(sha256hex string) error { panic("skeleton") }

// RemovePartial deletes a partial file by key.
func (c *Cache) RemovePartial(key string) error { panic("skeleton") }

// Partials lists the keys of the partial files.
func (c *Cache) Partials() []string { panic("skeleton") }
