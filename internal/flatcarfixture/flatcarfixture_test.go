package flatcarfixture

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func requireGPG(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"gpg", "gpgconf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian package gnupg)", tool)
		}
	}
}

// gpgVerify checks a signature as a user of the release would: the
// keyring imported into a fresh GNUPGHOME, then gpg --verify ARGS. It
// returns gpg's messages.
func gpgVerify(t *testing.T, keyring string, args ...string) (string, error) {
	t.Helper()
	home, err := os.MkdirTemp("", "mayu-gpgv")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		kill := exec.Command("gpgconf", "--kill", "gpg-agent")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		kill.Run()
		os.RemoveAll(home)
	}()
	run := func(args ...string) (string, error) {
		cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty"}, args...)...)
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("--import", keyring); err != nil {
		t.Fatalf("gpg --import %s: %v\n%s", keyring, err, out)
	}
	return run(append([]string{"--verify"}, args...)...)
}

// flatcarDigests is what Flatcar's make_digests writes for name in dir,
// run for real: the shell loop of its build scripts over md5sum, sha1sum
// and sha512sum.
func flatcarDigests(t *testing.T, dir, name string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", `for hash in md5 sha1 sha512; do echo "# $hash HASH" | tr "a-z" "A-Z"; ${hash}sum "$1"; done`, "-", name)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func makeRelease(t *testing.T, algo string) *Release {
	t.Helper()
	requireGPG(t)
	dir := t.TempDir()
	if _, err := BigFile(filepath.Join(dir, "flatcar_production_image.bin.bz2"), 3<<20+17, 1); err != nil {
		t.Fatal(err)
	}
	r, err := Make(dir, "flatcar_production_image.bin.bz2", algo, filepath.Join(t.TempDir(), "keyring.asc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		home := r.Key.Home
		if err := r.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(home); !os.IsNotExist(err) {
			t.Errorf("GNUPGHOME %s is still there: %v", home, err)
		}
	})
	return r
}

func TestMakeIsFlatcarsFormatAndVerifies(t *testing.T) {
	for _, algo := range []string{"ed25519", "rsa2048"} {
		t.Run(algo, func(t *testing.T) {
			r := makeRelease(t, algo)
			dir := filepath.Dir(r.File)

			digests, err := os.ReadFile(r.Digests)
			if err != nil {
				t.Fatal(err)
			}
			if want := flatcarDigests(t, dir, r.Name); string(digests) != want {
				t.Errorf("DIGESTS:\n%s\nwant (Flatcar's make_digests):\n%s", digests, want)
			}
			out, err := exec.Command("sha256sum", r.File).Output()
			if err != nil || !strings.HasPrefix(string(out), r.SHA256+" ") {
				t.Errorf("SHA256 %s, sha256sum says %s (%v)", r.SHA256, out, err)
			}
			if fi, err := os.Stat(r.File); err != nil || fi.Size() != r.Size {
				t.Errorf("Size %d, file %v %v", r.Size, fi, err)
			}

			asc, _ := os.ReadFile(r.DigestsAsc)
			if !bytes.HasPrefix(asc, []byte("-----BEGIN PGP SIGNED MESSAGE-----\n")) || !bytes.Contains(asc, digests) {
				t.Errorf("DIGESTS.asc is not DIGESTS clearsigned:\n%s", asc)
			}
			if out, err := gpgVerify(t, r.Keyring, r.DigestsAsc); err != nil || !strings.Contains(out, `Good signature from "`+UID) {
				t.Errorf("gpg --verify DIGESTS.asc: %v\n%s", err, out)
			}
			// The detached signature is binary, as Flatcar publishes it.
			sig, _ := os.ReadFile(r.Sig)
			if len(sig) == 0 || sig[0]&0x80 == 0 || bytes.HasPrefix(sig, []byte("-----BEGIN")) {
				t.Errorf(".sig is not a binary OpenPGP packet: % x", sig[:min(len(sig), 8)])
			}
			if out, err := gpgVerify(t, r.Keyring, r.Sig, r.File); err != nil || !strings.Contains(out, "Good signature") {
				t.Errorf("gpg --verify .sig: %v\n%s", err, out)
			}
			keyring, _ := os.ReadFile(r.Keyring)
			if !bytes.HasPrefix(keyring, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
				t.Errorf("keyring is not an armored public key:\n%s", keyring)
			}
		})
	}
}

func TestTamperedReleasesFailAsTheyShould(t *testing.T) {
	r := makeRelease(t, "")
	dir := t.TempDir()
	at := func(name string) string { return filepath.Join(dir, name) }

	if err := r.ClearsignedByOtherKey(at("other.asc")); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, r.Keyring, at("other.asc")); err == nil || !strings.Contains(out, "No public key") {
		t.Errorf("DIGESTS.asc by another key: %v\n%s", err, out)
	}
	other, _ := os.ReadFile(at("other.asc"))
	digests, _ := os.ReadFile(r.Digests)
	if !bytes.Contains(other, digests) {
		t.Errorf("the other key signed other text:\n%s", other)
	}

	if err := r.DetachedByOtherKey(at("other.sig")); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, r.Keyring, at("other.sig"), r.File); err == nil || !strings.Contains(out, "No public key") {
		t.Errorf(".sig by another key: %v\n%s", err, out)
	}

	if err := r.AlteredClearsigned(at("altered.asc")); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, r.Keyring, at("altered.asc")); err == nil || !strings.Contains(out, "BAD signature") {
		t.Errorf("altered DIGESTS.asc: %v\n%s", err, out)
	}
	altered, _ := os.ReadFile(at("altered.asc"))
	orig, _ := os.ReadFile(r.DigestsAsc)
	if sigOf(altered) != sigOf(orig) || bytes.Contains(altered, []byte(r.SHA512)) {
		t.Errorf("altered DIGESTS.asc should keep the signature and lose the SHA512:\n%s", altered)
	}

	// A good signature over a wrong digest: gpg is content, the digest
	// is not the file's.
	if err := r.SignedWrongDigest(at("wrong.asc")); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, r.Keyring, at("wrong.asc")); err != nil || !strings.Contains(out, "Good signature") {
		t.Errorf("wrong digest, good signature: %v\n%s", err, out)
	}
	wrong, _ := os.ReadFile(at("wrong.asc"))
	if bytes.Contains(wrong, []byte(r.SHA512)) || !bytes.Contains(wrong, []byte(r.SHA512[1:]+"  "+r.Name)) {
		t.Errorf("wrong.asc should list another SHA512 for %s:\n%s", r.Name, wrong)
	}
	if _, err := os.Stat(at("wrong.asc.plain")); !os.IsNotExist(err) {
		t.Errorf("the unsigned text was left behind: %v", err)
	}
}

// sigOf is the signature block of a clearsigned text.
func sigOf(b []byte) string {
	i := bytes.Index(b, []byte("-----BEGIN PGP SIGNATURE-----"))
	if i < 0 {
		return ""
	}
	return string(b[i:])
}

func TestBigFileIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	const size = 8<<20 + 3
	a, err := BigFile(filepath.Join(dir, "a"), size, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := BigFile(filepath.Join(dir, "b"), size, 7)
	c, _ := BigFile(filepath.Join(dir, "c"), size, 8)
	if a != b || a == c || a.Size != size {
		t.Errorf("seed 7 twice: %+v %+v; seed 8: %+v", a, b, c)
	}
	if s, err := SumFile(filepath.Join(dir, "a")); err != nil || s != a {
		t.Errorf("file sums %+v %v, BigFile said %+v", s, err, a)
	}
	out, err := exec.Command("sha512sum", filepath.Join(dir, "c")).Output()
	if err != nil || !strings.HasPrefix(string(out), c.SHA512+" ") {
		t.Errorf("sha512sum: %s %v, want %s", out, err, c.SHA512)
	}
}
