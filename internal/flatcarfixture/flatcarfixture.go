// Package flatcarfixture makes a release directory the way Flatcar
// publishes one, signed with the real gpg, for the tests of mayu's artifact
// verification: next to a file NAME it writes
//
//	NAME.DIGESTS      MD5, SHA1 and SHA512 of NAME (no SHA-256)
//	NAME.DIGESTS.asc  NAME.DIGESTS, clearsigned (gpg --clearsign)
//	NAME.sig          a detached binary signature of NAME (gpg --detach-sign)
//
// and exports the signing key's public half, armored, to a keyring file
// (what `mayuctl artifact add --keyring FILE` reads). The key is made for
// the occasion (ed25519 by default, as gpg --quick-gen-key makes it) in a
// temporary GNUPGHOME that Release.Close removes with its gpg-agent.
//
// The format is Flatcar's own. Its build scripts (flatcar/scripts,
// build_library/release_util.sh make_digests and
// ci-automation/ci_automation_common.sh create_digests and
// sign_artifacts) write, per file and for md5, sha1 and sha512 in that
// order, a line `# <HASH> HASH` in upper case followed by `<hex>  <name>`
// (the `<hash>sum` output: two spaces, the base name), then
// `gpg --batch --local-user SIGNER --output NAME.DIGESTS.asc --clearsign
// NAME.DIGESTS` and `gpg --batch --local-user SIGNER --output NAME.sig
// --detach-sign NAME` (binary, not armored). Release.Digests here is byte
// for byte what that script writes.
//
// The tampered variants a verifier must refuse: ClearsignedByOtherKey and
// DetachedByOtherKey (a good signature by a key not in the keyring),
// AlteredClearsigned (the text changed under the original signature) and
// SignedWrongDigest (a good signature over a SHA512 that is not the
// file's). BigFile writes a large file of deterministic bytes quickly.
package flatcarfixture

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// UID is the user id of the keys made here.
const UID = "Mayu Test Release <release@test>"

// Key is a signing key in a temporary GNUPGHOME of its own.
type Key struct {
	Home        string // GNUPGHOME
	Fingerprint string
}

// NewKey makes a signing key with gpg: algo is what --quick-gen-key takes
// ("ed25519", "rsa2048", "rsa4096" as Flatcar's; "" is ed25519). Close
// removes it.
func NewKey(algo string) (*Key, error) {
	if algo == "" {
		algo = "ed25519"
	}
	// A short path: gpg-agent's socket lives here and a Unix socket path
	// is limited to 108 bytes (t.TempDir() names can be longer).
	home, err := os.MkdirTemp("", "mayu-gpg")
	if err != nil {
		return nil, err
	}
	k := &Key{Home: home}
	if _, err := k.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", UID, algo, "sign", "never"); err != nil {
		k.Close()
		return nil, err
	}
	out, err := k.gpg("--with-colons", "--list-secret-keys")
	if err != nil {
		k.Close()
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			k.Fingerprint = f[9]
			break
		}
	}
	if k.Fingerprint == "" {
		k.Close()
		return nil, fmt.Errorf("flatcarfixture: no fingerprint in gpg --list-secret-keys:\n%s", out)
	}
	return k, nil
}

// gpg runs gpg in the key's home and returns its stdout.
func (k *Key) gpg(args ...string) (string, error) {
	cmd := exec.Command("gpg", append([]string{"--batch", "--yes", "--no-tty"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+k.Home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("flatcarfixture: gpg %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// ExportPublic writes the armored public key to path.
func (k *Key) ExportPublic(path string) error {
	_, err := k.gpg("--armor", "--output", path, "--export", k.Fingerprint)
	return err
}

// Clearsign writes in, clearsigned, to out.
func (k *Key) Clearsign(in, out string) error {
	_, err := k.gpg("--local-user", k.Fingerprint, "--output", out, "--clearsign", in)
	return err
}

// DetachSign writes a detached binary signature of in to out.
func (k *Key) DetachSign(in, out string) error {
	_, err := k.gpg("--local-user", k.Fingerprint, "--output", out, "--detach-sign", in)
	return err
}

// Close stops the key's gpg-agent and removes its home.
func (k *Key) Close() error {
	cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
	cmd.Env = append(os.Environ(), "GNUPGHOME="+k.Home)
	cmd.Run() // no agent was started when key generation failed early
	return os.RemoveAll(k.Home)
}

// Sums are a file's digests, in hex.
type Sums struct {
	Size                      int64
	MD5, SHA1, SHA256, SHA512 string
}

// SumFile reads path once and returns its digests.
func SumFile(path string) (Sums, error) {
	f, err := os.Open(path)
	if err != nil {
		return Sums{}, err
	}
	defer f.Close()
	return sum(f)
}

func sum(r io.Reader) (Sums, error) {
	hs := []hash.Hash{md5.New(), sha1.New(), sha256.New(), sha512.New()}
	w := io.MultiWriter(hs[0], hs[1], hs[2], hs[3])
	n, err := io.Copy(w, r)
	if err != nil {
		return Sums{}, err
	}
	h := func(i int) string { return hex.EncodeToString(hs[i].Sum(nil)) }
	return Sums{Size: n, MD5: h(0), SHA1: h(1), SHA256: h(2), SHA512: h(3)}, nil
}

// DigestsText is a .DIGESTS file for one file, in Flatcar's format.
func DigestsText(name string, s Sums) string {
	return fmt.Sprintf("# MD5 HASH\n%s  %s\n# SHA1 HASH\n%s  %s\n# SHA512 HASH\n%s  %s\n",
		s.MD5, name, s.SHA1, name, s.SHA512, name)
}

// Release is a file with its Flatcar companions. Paths are absolute.
type Release struct {
	Name       string // the file's base name
	File       string
	Digests    string // File + ".DIGESTS"
	DigestsAsc string // File + ".DIGESTS.asc"
	Sig        string // File + ".sig"
	Keyring    string // the armored public key
	Sums              // of File; SHA256 is what mayu's cache is keyed by
	Key        *Key
}

// Make signs dir/name as Flatcar does, with a new key of the given
// algorithm (see NewKey), and writes its public key to keyring. Close
// removes the key (not the files).
func Make(dir, name, algo, keyring string) (*Release, error) {
	k, err := NewKey(algo)
	if err != nil {
		return nil, err
	}
	r, err := Sign(k, dir, name, keyring)
	if err != nil {
		k.Close()
		return nil, err
	}
	return r, nil
}

// Sign writes the companions of dir/name signed by k, and k's public key
// to keyring; existing companions are replaced.
func Sign(k *Key, dir, name, keyring string) (*Release, error) {
	if name != filepath.Base(name) {
		return nil, fmt.Errorf("flatcarfixture: %q is not a file name", name)
	}
	file, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if keyring, err = filepath.Abs(keyring); err != nil {
		return nil, err
	}
	sums, err := SumFile(file)
	if err != nil {
		return nil, err
	}
	r := &Release{Name: name, File: file, Digests: file + ".DIGESTS", DigestsAsc: file + ".DIGESTS.asc",
		Sig: file + ".sig", Keyring: keyring, Sums: sums, Key: k}
	if err := os.WriteFile(r.Digests, []byte(DigestsText(name, sums)), 0o644); err != nil {
		return nil, err
	}
	if err := errors.Join(k.Clearsign(r.Digests, r.DigestsAsc), k.DetachSign(r.File, r.Sig), k.ExportPublic(keyring)); err != nil {
		return nil, err
	}
	return r, nil
}

// Close removes the release's key.
func (r *Release) Close() error { return r.Key.Close() }

// withOtherKey runs fn with a new key of the same kind, not in the keyring.
func withOtherKey(fn func(*Key) error) error {
	k, err := NewKey("")
	if err != nil {
		return err
	}
	defer k.Close()
	return fn(k)
}

// ClearsignedByOtherKey writes to out the release's DIGESTS, unchanged and
// clearsigned with a good signature, by a key that is not in the keyring.
func (r *Release) ClearsignedByOtherKey(out string) error {
	return withOtherKey(func(k *Key) error { return k.Clearsign(r.Digests, out) })
}

// DetachedByOtherKey writes to out a good detached signature of the file
// by a key that is not in the keyring.
func (r *Release) DetachedByOtherKey(out string) error {
	return withOtherKey(func(k *Key) error { return k.DetachSign(r.File, out) })
}

// AlteredClearsigned writes to out the release's DIGESTS.asc with the first
// digit of the SHA512 changed, under the original signature: what a
// mirror that swapped the file and edited the digest would serve.
func (r *Release) AlteredClearsigned(out string) error {
	asc, err := os.ReadFile(r.DigestsAsc)
	if err != nil {
		return err
	}
	altered := bytes.Replace(asc, []byte(r.SHA512), []byte(flipFirst(r.SHA512)), 1)
	if bytes.Equal(altered, asc) {
		return fmt.Errorf("flatcarfixture: no SHA512 %s in %s", r.SHA512, r.DigestsAsc)
	}
	return os.WriteFile(out, altered, 0o644)
}

// SignedWrongDigest writes to out a DIGESTS, clearsigned by the release's
// own key (a good signature), whose SHA512 is not the file's: the
// signature checks, the digest does not.
func (r *Release) SignedWrongDigest(out string) error {
	wrong := r.Sums
	wrong.SHA512 = flipFirst(r.SHA512)
	plain := out + ".plain"
	if err := os.WriteFile(plain, []byte(DigestsText(r.Name, wrong)), 0o644); err != nil {
		return err
	}
	defer os.Remove(plain)
	return r.Key.Clearsign(plain, out)
}

func flipFirst(hexDigits string) string {
	c := byte('0')
	if hexDigits[0] == '0' {
		c = '1'
	}
	return string(c) + hexDigits[1:]
}

// BigFile writes size bytes of deterministic pseudo-random data (ChaCha8
// seeded from seed: the same seed, the same bytes) to path, streaming (a
// few GB/s, constant memory), and returns their digests.
func BigFile(path string, size int64, seed uint64) (Sums, error) {
	f, err := os.Create(path)
	if err != nil {
		return Sums{}, err
	}
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	w := bufio.NewWriterSize(f, 1<<20)
	sums, err := sum(io.TeeReader(io.LimitReader(rand.NewChaCha8(s), size), w))
	if err = errors.Join(err, w.Flush(), f.Close()); err != nil {
		os.Remove(path)
		return Sums{}, err
	}
	return sums, nil
}
