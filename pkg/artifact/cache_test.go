package artifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func openCache(t *testing.T, dir string, quota int64) *Cache {
	t.Helper()
	c, err := OpenCache(dir, quota)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.root.Close() })
	return c
}

// put writes data under key and commits it.
func put(t *testing.T, c *Cache, key string, data []byte) string {
	t.Helper()
	p, err := c.Begin(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256Hex(data)
	if err := p.Commit(sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

// files lists what is on disk below dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestCacheCommit(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	data := bytes.Repeat([]byte("kernel"), 100000)
	p, err := c.Begin("flatcar-kernel")
	if err != nil {
		t.Fatal(err)
	}
	// Written in pieces, as a transfer does.
	for b := data; len(b) > 0; b = b[min(len(b), 7777):] {
		if _, err := p.Write(b[:min(len(b), 7777)]); err != nil {
			t.Fatal(err)
		}
	}
	s256, s512 := p.Hashes()
	if s256 != sha256Hex(data) || s512 != sha512Hex(data) {
		t.Fatalf("hashes %s %s", s256, s512)
	}
	if c.Has(s256) {
		t.Fatal("held before Commit")
	}
	if got := c.Partials(); !slices.Equal(got, []string{"flatcar-kernel"}) {
		t.Errorf("partials %v", got)
	}
	if err := p.Commit(s256); err != nil {
		t.Fatal(err)
	}
	if !c.Has(s256) || !slices.Equal(c.Held(), []string{s256}) {
		t.Fatalf("not held after Commit: %v", c.Held())
	}
	if len(c.Partials()) != 0 {
		t.Errorf("partials after Commit: %v", c.Partials())
	}
	if c.Used() != int64(len(data)) {
		t.Errorf("used %d, want %d", c.Used(), len(data))
	}
	if got := files(t, dir); !slices.Equal(got, []string{"sha256/" + s256}) {
		t.Errorf("files %v", got)
	}
	info, err := os.Stat(filepath.Join(dir, "sha256", s256))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o444 {
		t.Errorf("mode %v, want read-only", info.Mode())
	}
	f, err := c.Open(s256)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Error("Open reads other bytes")
	}
	// Done with: no more writes, commits or double accounting.
	if _, err := p.Write([]byte("x")); err == nil {
		t.Error("Write after Commit accepted")
	}
	if err := p.Close(); err != nil {
		t.Error(err)
	}

	// The same bytes under a second name take no more room.
	if put(t, c, "flatcar-kernel-again", data) != s256 || c.Used() != int64(len(data)) {
		t.Errorf("used %d after the same bytes again", c.Used())
	}
	if err := c.Remove(s256); err != nil {
		t.Fatal(err)
	}
	if c.Has(s256) || c.Used() != 0 || len(files(t, dir)) != 0 {
		t.Errorf("after Remove: has %v, used %d, files %v", c.Has(s256), c.Used(), files(t, dir))
	}
	if _, err := c.Open(s256); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open after Remove: %v", err)
	}
	if err := c.Remove(s256); err != nil {
		t.Errorf("Remove of what is not held: %v", err)
	}
}

func TestCacheRefusesWrongDigest(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	p, err := c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("tampered image"))
	want := sha256Hex([]byte("genuine image"))
	err = p.Commit(want)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("got %v, want ErrDigest", err)
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), sha256Hex([]byte("tampered image"))) {
		t.Errorf("error does not name both digests: %v", err)
	}
	if c.Has(want) || len(c.Held()) != 0 || c.Used() != 0 || len(c.Partials()) != 0 {
		t.Errorf("kept something: held %v used %d partials %v", c.Held(), c.Used(), c.Partials())
	}
	if got := files(t, dir); len(got) != 0 {
		t.Errorf("files left: %v", got)
	}
	// The key is free again.
	put(t, c, "image", []byte("genuine image"))
}

func TestCacheResumeAfterReopen(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 65536)
	c := openCache(t, dir, 0)
	p, err := c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data[:400000])
	if _, err := c.Begin("image"); err == nil {
		t.Fatal("a second transfer of the same key was allowed")
	}
	if err := c.RemovePartial("image"); err == nil {
		t.Fatal("a partial being written was removed")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	c.root.Close()

	// A restart: the partial is found and counted, and resumes.
	c = openCache(t, dir, 0)
	if !slices.Equal(c.Partials(), []string{"image"}) || c.Used() != 400000 {
		t.Fatalf("after reopen: partials %v, used %d", c.Partials(), c.Used())
	}
	p, err = c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 400000 {
		t.Fatalf("resumed at %d", p.Size())
	}
	p.Write(data[400000:])
	if s256, s512 := p.Hashes(); s256 != sha256Hex(data) || s512 != sha512Hex(data) {
		t.Fatal("the hashes of a resumed transfer do not cover the earlier bytes")
	}
	r, err := p.Reader()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("Reader reads other bytes")
	}
	if err := p.Commit(sha256Hex(data)); err != nil {
		t.Fatal(err)
	}
	if c.Used() != int64(len(data)) {
		t.Errorf("used %d, want %d", c.Used(), len(data))
	}

	// reset (a server that sent the whole file again) starts over.
	p, _ = c.Begin("other")
	p.Write([]byte("old version, half"))
	if err := p.reset(); err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("new"))
	if s, _ := p.Hashes(); s != sha256Hex([]byte("new")) || p.Size() != 3 || c.Used() != int64(len(data))+3 {
		t.Errorf("after reset: size %d used %d", p.Size(), c.Used())
	}
	if err := p.Discard(); err != nil {
		t.Fatal(err)
	}
	if c.Used() != int64(len(data)) || len(c.Partials()) != 0 {
		t.Errorf("after Discard: used %d partials %v", c.Used(), c.Partials())
	}
}

func TestCacheQuota(t *testing.T) {
	c := openCache(t, t.TempDir(), 1000)
	if err := c.Fits(1000); err != nil {
		t.Fatal(err)
	}
	err := c.Fits(1001)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "quota of 1000 bytes") || !strings.Contains(err.Error(), "1001 bytes") {
		t.Fatalf("got %v, want ErrNoSpace naming the quota and the numbers", err)
	}
	put(t, c, "a", bytes.Repeat([]byte("a"), 400))
	p, _ := c.Begin("b")
	p.Write(bytes.Repeat([]byte("b"), 300))
	// Partial bytes count too.
	if err := c.Fits(301); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "700 in use") {
		t.Fatalf("got %v, want ErrNoSpace with 700 in use", err)
	}
	if err := c.Fits(300); err != nil {
		t.Fatal(err)
	}
	// A server sending more than it announced is stopped at the quota.
	if n, err := p.Write(bytes.Repeat([]byte("b"), 301)); !errors.Is(err, ErrNoSpace) || n != 0 {
		t.Fatalf("wrote %d past the quota: %v", n, err)
	}
	if c.Used() != 700 || p.Size() != 300 {
		t.Errorf("used %d size %d after a refused write", c.Used(), p.Size())
	}
	if _, err := OpenCache(t.TempDir(), -1); err == nil {
		t.Error("a negative quota was accepted")
	}
}

func TestCacheDiskFull(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	// The real disk: nothing has an exabyte free.
	err := c.Fits(1 << 60)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "the disk holding "+dir) {
		t.Fatalf("got %v, want ErrNoSpace naming the disk", err)
	}
	if err := c.Fits(1); err != nil {
		t.Fatal(err)
	}
	// A small disk: what is left must stay above the reserve.
	c.free = func() (int64, error) { return minFree + 4096, nil }
	err = c.Fits(5000)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "5000 bytes needed") || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes free", minFree+4096)) {
		t.Fatalf("got %v", err)
	}
	if err := c.Fits(4096); err != nil {
		t.Fatal(err)
	}
}

func TestCacheVerifyAllRemovesCorrupted(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	good := put(t, c, "good", []byte("good bytes"))
	bad := put(t, c, "bad", []byte("bytes that will rot"))
	c.root.Close()

	// The disk changes a file under its name.
	path := filepath.Join(dir, "sha256", bad)
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, []byte("bytes that have rotted"), 0o444); err != nil {
		t.Fatal(err)
	}
	// Files mayu would not have made are left alone.
	os.WriteFile(filepath.Join(dir, "sha256", "README"), []byte("not ours"), 0o644)

	c = openCache(t, dir, 0)
	if c.Has(good) || c.Has(bad) {
		t.Fatal("files found at open are served before they are verified")
	}
	if _, err := c.Open(good); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open before VerifyAll: %v", err)
	}
	held, err := c.VerifyAll()
	if !slices.Equal(held, []string{good}) {
		t.Errorf("held %v, want only %s", held, good)
	}
	if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "removed") {
		t.Errorf("got %v, want ErrDigest naming the removed %s", err, bad)
	}
	if !c.Has(good) || c.Has(bad) {
		t.Error("after VerifyAll")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the corrupted file is still there: %v", err)
	}
	if c.Used() != int64(len("good bytes")) {
		t.Errorf("used %d", c.Used())
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256", "README")); err != nil {
		t.Errorf("a file that is not the cache's was touched: %v", err)
	}
	// Nothing left to verify: no error the second time.
	if held, err := c.VerifyAll(); err != nil || !slices.Equal(held, []string{good}) {
		t.Errorf("second VerifyAll: %v %v", held, err)
	}
}

func TestCacheHostileKeys(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	c := openCache(t, dir, 0)
	outside := filepath.Join(parent, "outside")
	os.WriteFile(outside, []byte("keep me"), 0o644)

	for _, key := range []string{"", ".", "..", "../outside", "a/b", "/etc/passwd", "-x", "a\x00b", strings.Repeat("a", 129), "\x1b[31m"} {
		if _, err := c.Begin(key); err == nil {
			t.Errorf("Begin(%q) accepted", key)
		}
		if err := c.RemovePartial(key); err == nil {
			t.Errorf("RemovePartial(%q) accepted", key)
		}
		if err := c.Remove(key); err == nil {
			t.Errorf("Remove(%q) accepted", key)
		}
		if _, err := c.Open(key); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%q): %v", key, err)
		}
		if c.Has(key) {
			t.Errorf("Has(%q)", key)
		}
	}
	for _, sum := range []string{"../outside", strings.ToUpper(sha256Hex(nil)), sha256Hex(nil)[1:]} {
		p, _ := c.Begin("k")
		if err := p.Commit(sum); err == nil {
			t.Errorf("Commit(%q) accepted", sum)
		}
	}
	// A link planted in the cache leads nowhere outside it.
	if err := os.Symlink(outside, filepath.Join(dir, "partial", "planted")); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Begin("planted"); err == nil {
		p.Write([]byte("overwritten"))
		p.Close()
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep me" {
		t.Fatalf("a file outside the cache was written: %q", b)
	}
}

func TestOpenCacheRefusesWhatItCannotUse(t *testing.T) {
	parent := t.TempDir()
	// A file where the cache's directory should be.
	blocked := filepath.Join(parent, "blocked")
	os.MkdirAll(blocked, 0o750)
	os.WriteFile(filepath.Join(blocked, "sha256"), nil, 0o644)
	if _, err := OpenCache(blocked, 0); err == nil || !strings.Contains(err.Error(), filepath.Join(blocked, "sha256")) {
		t.Errorf("got %v, want an error naming %s", err, filepath.Join(blocked, "sha256"))
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: a read-only directory cannot be tested")
		return
	}
	ro := filepath.Join(parent, "ro")
	openCache(t, ro, 0)
	os.Chmod(filepath.Join(ro, "partial"), 0o500)
	t.Cleanup(func() { os.Chmod(filepath.Join(ro, "partial"), 0o750) })
	if _, err := OpenCache(ro, 0); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("got %v, want an error saying the cache is not writable", err)
	}
}

func TestOpenCacheCreatesDirectories(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	openCache(t, dir, 0)
	for _, d := range []string{dir, filepath.Join(dir, "sha256"), filepath.Join(dir, "partial")} {
		info, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o027 != 0 {
			t.Errorf("%s has mode %v", d, info.Mode())
		}
	}
}
