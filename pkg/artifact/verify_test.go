package artifact

import (
	"bytes"
	"crypto"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// newSigner makes an OpenPGP key in-process (Ed25519: fast).
func newSigner(t testing.TB, name string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "test", name+"@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// publicKey is e's armored public key, as an operator's --keyring file.
func publicKey(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.Bytes()
}

func keyring(t testing.TB, es ...*openpgp.Entity) *Keyring {
	t.Helper()
	var all []byte
	for _, e := range es {
		all = append(all, publicKey(t, e)...)
	}
	kr, err := ParseKeyring(all)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func clearsignText(t testing.TB, e *openpgp.Entity, text string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := clearsign.Encode(&b, e.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// flatcarDigests is a digests file as Flatcar's release tooling writes
// it: md5sum, sha1sum and sha512sum output, each under its heading.
func flatcarDigests(files map[string][]byte) string {
	var b strings.Builder
	sums := []struct {
		name string
		sum  func([]byte) []byte
	}{
		{"MD5", func(d []byte) []byte { s := md5.Sum(d); return s[:] }},
		{"SHA1", func(d []byte) []byte { s := sha1.Sum(d); return s[:] }},
		{"SHA512", func(d []byte) []byte { s := sha512.Sum512(d); return s[:] }},
	}
	for _, s := range sums {
		fmt.Fprintf(&b, "# %s HASH\n", s.name)
		for name, data := range files {
			fmt.Fprintf(&b, "%x  %s\n", s.sum(data), name)
		}
	}
	return b.String()
}

func sha512Hex(b []byte) string { s := sha512.Sum512(b); return hex.EncodeToString(s[:]) }

const imageName = "flatcar_production_image.bin.bz2"

func TestCheckDigests(t *testing.T) {
	signer, other := newSigner(t, "Upstream Signer"), newSigner(t, "Someone Else")
	kr := keyring(t, signer)
	image := []byte("the OS image")
	evil := []byte("an image with a backdoor")
	digests := flatcarDigests(map[string][]byte{imageName: image, "flatcar_production_pxe.vmlinuz": []byte("kernel")})
	good := clearsignText(t, signer, digests)
	wantSigner := fmt.Sprintf("key %s (Upstream Signer (test) <Upstream Signer@example.com>)", signer.PrimaryKey.KeyIdString())

	t.Run("good", func(t *testing.T) {
		sum, who, err := CheckDigests(good, kr, imageName)
		if err != nil {
			t.Fatal(err)
		}
		if sum != sha512Hex(image) {
			t.Errorf("sha512 %s, want %s", sum, sha512Hex(image))
		}
		if who != wantSigner {
			t.Errorf("signer %q, want %q", who, wantSigner)
		}
	})
	t.Run("keyring holding other keys too", func(t *testing.T) {
		if _, _, err := CheckDigests(good, keyring(t, other, signer), imageName); err != nil {
			t.Fatal(err)
		}
	})

	refused := func(t *testing.T, data []byte, kr *Keyring, file string, sig bool, says string) {
		t.Helper()
		sum, _, err := CheckDigests(data, kr, file)
		if err == nil {
			t.Fatalf("accepted, sha512 %s", sum)
		}
		if sig != errors.Is(err, ErrSignature) {
			t.Errorf("errors.Is(err, ErrSignature) = %v, want %v: %v", !sig, sig, err)
		}
		if !strings.Contains(err.Error(), says) {
			t.Errorf("error %q does not say %q", err, says)
		}
	}
	t.Run("wrong key", func(t *testing.T) {
		refused(t, clearsignText(t, other, digests), kr, imageName, true, other.PrimaryKey.KeyIdString()+", which is not in the keyring")
	})
	t.Run("tampered text", func(t *testing.T) {
		tampered := bytes.Replace(good, []byte(sha512Hex(image)), []byte(sha512Hex(evil)), 1)
		if bytes.Equal(tampered, good) {
			t.Fatal("nothing replaced")
		}
		refused(t, tampered, kr, imageName, true, "does not verify")
	})
	t.Run("unsigned", func(t *testing.T) {
		refused(t, []byte(digests), kr, imageName, true, "not clearsigned")
	})
	t.Run("signature block removed", func(t *testing.T) {
		i := bytes.Index(good, []byte("-----BEGIN PGP SIGNATURE-----"))
		refused(t, good[:i], kr, imageName, true, "not clearsigned")
	})
	t.Run("signature of other text", func(t *testing.T) {
		// The signature block of a genuine file, under other text.
		otherText := clearsignText(t, signer, flatcarDigests(map[string][]byte{imageName: evil}))
		i := bytes.Index(good, []byte("-----BEGIN PGP SIGNATURE-----"))
		j := bytes.Index(otherText, []byte("-----BEGIN PGP SIGNATURE-----"))
		spliced := append(append([]byte{}, otherText[:j]...), good[i:]...)
		refused(t, spliced, kr, imageName, true, "does not verify")
	})
	t.Run("no keyring", func(t *testing.T) {
		refused(t, good, nil, imageName, false, "no keyring")
	})
	t.Run("missing SHA512 section", func(t *testing.T) {
		noSHA512 := digests[:strings.Index(digests, "# SHA512 HASH")]
		refused(t, clearsignText(t, signer, noSHA512), kr, imageName, false, `no "# SHA512 HASH" section`)
	})
	t.Run("file not listed", func(t *testing.T) {
		refused(t, good, kr, "flatcar_production_qemu_image.img", false, "lists no SHA-512 for flatcar_production_qemu_image.img")
	})
	t.Run("file listed twice", func(t *testing.T) {
		twice := digests + fmt.Sprintf("%s  %s\n", sha512Hex(evil), imageName)
		refused(t, clearsignText(t, signer, twice), kr, imageName, false, "two different SHA-512")
	})
	t.Run("malformed line", func(t *testing.T) {
		bad := digests + "deadbeef  " + imageName + "\n"
		refused(t, clearsignText(t, signer, bad), kr, imageName, false, "is not \"<sha512>  <file>\"")
	})

	// Text around the clearsigned block is not signed: anyone on the way
	// could have put it there. It must change nothing.
	line := fmt.Sprintf("# SHA512 HASH\n%s  %s\n", sha512Hex(evil), imageName)
	t.Run("appended unsigned line", func(t *testing.T) {
		sum, _, err := CheckDigests(append(append([]byte{}, good...), line...), kr, imageName)
		if err != nil {
			t.Fatal(err)
		}
		if sum != sha512Hex(image) {
			t.Fatalf("the unsigned line after the signature was used: %s", sum)
		}
	})
	t.Run("prepended unsigned line", func(t *testing.T) {
		sum, _, err := CheckDigests(append([]byte(line), good...), kr, imageName)
		if err != nil {
			t.Fatal(err)
		}
		if sum != sha512Hex(image) {
			t.Fatalf("the unsigned line before the clearsigned block was used: %s", sum)
		}
	})
	t.Run("appended line for a file the signed text does not list", func(t *testing.T) {
		extra := fmt.Sprintf("%s  flatcar_production_qemu_image.img\n", sha512Hex(evil))
		refused(t, append(append([]byte{}, good...), extra...), kr, "flatcar_production_qemu_image.img", false, "lists no SHA-512")
	})
	t.Run("a second, unverifiable block after a good one", func(t *testing.T) {
		// Only the first block counts, and it is the genuine one.
		data := append(append([]byte{}, good...), clearsignText(t, other, flatcarDigests(map[string][]byte{imageName: evil}))...)
		sum, _, err := CheckDigests(data, kr, imageName)
		if err != nil || sum != sha512Hex(image) {
			t.Fatalf("sha512 %s, %v; want the first block's %s", sum, err, sha512Hex(image))
		}
	})
	t.Run("an unverifiable block before a good one", func(t *testing.T) {
		data := append(clearsignText(t, other, flatcarDigests(map[string][]byte{imageName: evil})), good...)
		refused(t, data, kr, imageName, true, "not in the keyring")
	})
}

func TestCheckDetached(t *testing.T) {
	signer, other := newSigner(t, "Upstream Signer"), newSigner(t, "Someone Else")
	kr := keyring(t, signer)
	image := bytes.Repeat([]byte("image bytes\n"), 1000)
	sign := func(e *openpgp.Entity, data []byte, armored, text bool) []byte {
		var b bytes.Buffer
		var err error
		switch {
		case armored && text:
			err = openpgp.ArmoredDetachSignText(&b, e, bytes.NewReader(data), nil)
		case armored:
			err = openpgp.ArmoredDetachSign(&b, e, bytes.NewReader(data), nil)
		default:
			err = openpgp.DetachSign(&b, e, bytes.NewReader(data), nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	for _, armored := range []bool{true, false} {
		t.Run(fmt.Sprintf("good armored=%v", armored), func(t *testing.T) {
			who, err := CheckDetached(bytes.NewReader(image), sign(signer, image, armored, false), kr)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(who, "key "+signer.PrimaryKey.KeyIdString()+" (Upstream Signer") {
				t.Errorf("signer %q", who)
			}
		})
	}
	refused := func(t *testing.T, data, sig []byte, says string) {
		t.Helper()
		_, err := CheckDetached(bytes.NewReader(data), sig, kr)
		if !errors.Is(err, ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
		if !strings.Contains(err.Error(), says) {
			t.Errorf("error %q does not say %q", err, says)
		}
	}
	t.Run("other bytes", func(t *testing.T) {
		tampered := bytes.Clone(image)
		tampered[len(tampered)/2] ^= 1
		refused(t, tampered, sign(signer, image, false, false), "does not verify")
	})
	t.Run("truncated bytes", func(t *testing.T) {
		refused(t, image[:len(image)-1], sign(signer, image, true, false), "does not verify")
	})
	t.Run("wrong key", func(t *testing.T) {
		refused(t, image, sign(other, image, false, false), "not in the keyring")
	})
	t.Run("text signature", func(t *testing.T) {
		// A text signature holds for the bytes with other line ends.
		refused(t, image, sign(signer, image, true, true), "text signature")
	})
	t.Run("empty", func(t *testing.T) {
		refused(t, image, nil, "holds no signature")
	})
	t.Run("garbage", func(t *testing.T) {
		_, err := CheckDetached(bytes.NewReader(image), []byte("not a signature at all"), kr)
		if !errors.Is(err, ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
	})
	t.Run("armored public key instead", func(t *testing.T) {
		refused(t, image, publicKey(t, signer), "not a PGP SIGNATURE")
	})
}

func TestParseKeyring(t *testing.T) {
	e := newSigner(t, "Upstream Signer")
	var binary bytes.Buffer
	if err := e.Serialize(&binary); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyring(binary.Bytes()); err != nil {
		t.Errorf("binary public key: %v", err)
	}
	if _, err := ParseKeyring(publicKey(t, e)); err != nil {
		t.Errorf("armored public key: %v", err)
	}
	var private bytes.Buffer
	w, _ := armor.Encode(&private, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for name, c := range map[string]struct {
		data []byte
		says string
	}{
		"empty":       {nil, "keyring is empty"},
		"blank":       {[]byte(" \n\t\n"), "keyring is empty"},
		"garbage":     {[]byte("not a key"), "not an OpenPGP public key"},
		"bad armor":   {[]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"), "not an OpenPGP public key"},
		"private key": {private.Bytes(), "give only the public key"},
	} {
		_, err := ParseKeyring(c.data)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: got %v, want an error saying %q", name, err, c.says)
		}
	}
}

// TestGPGInterop checks what Flatcar's release tooling makes (GnuPG: an
// RSA primary key that only certifies, a signing subkey, a clearsigned
// DIGESTS.asc with Hash: SHA512, a binary detached .sig) against this
// package, with Debian's gpg.
func TestGPGInterop(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg is not installed")
	}
	home := t.TempDir()
	gpg := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		cmd.Run()
	})
	const uid = "Flatcar Test Buildbot <buildbot@example.com>"
	gpg("--quick-gen-key", uid, "rsa2048", "cert", "never")
	var fpr, keyID string
	for _, line := range strings.Split(string(gpg("--list-keys", "--with-colons", uid)), "\n") {
		f := strings.Split(line, ":")
		if f[0] == "pub" {
			keyID = f[4]
		}
		if f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	if fpr == "" || keyID == "" {
		t.Fatal("no key made")
	}
	gpg("--quick-add-key", fpr, "rsa2048", "sign", "never")
	kr, err := ParseKeyring(gpg("--export", "--armor", fpr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyring(gpg("--export", fpr)); err != nil {
		t.Fatalf("binary export: %v", err)
	}

	dir := t.TempDir()
	image := bytes.Repeat([]byte{0, 1, 2, '\n', '\r', 0xff}, 100000)
	if err := os.WriteFile(filepath.Join(dir, imageName), image, 0o644); err != nil {
		t.Fatal(err)
	}
	digests := filepath.Join(dir, imageName+".DIGESTS")
	if err := os.WriteFile(digests, []byte(flatcarDigests(map[string][]byte{imageName: image})), 0o644); err != nil {
		t.Fatal(err)
	}
	gpg("--digest-algo", "SHA512", "--output", digests+".asc", "--clearsign", digests)
	gpg("--output", filepath.Join(dir, imageName+".sig"), "--detach-sign", filepath.Join(dir, imageName))
	gpg("--armor", "--output", filepath.Join(dir, imageName+".sig.asc"), "--detach-sign", filepath.Join(dir, imageName))

	asc, err := os.ReadFile(digests + ".asc")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(asc, []byte("Hash: SHA512")) {
		t.Errorf("gpg wrote no Hash: SHA512 header:\n%s", asc)
	}
	sum, who, err := CheckDigests(asc, kr, imageName)
	if err != nil {
		t.Fatal(err)
	}
	if sum != sha512Hex(image) {
		t.Errorf("sha512 %s, want %s", sum, sha512Hex(image))
	}
	if want := "key " + keyID + " (" + uid + ")"; who != want {
		t.Errorf("signer %q, want %q", who, want)
	}
	tampered := bytes.Replace(asc, []byte(sum[:16]), []byte("0000000000000000"), 1)
	if _, _, err := CheckDigests(tampered, kr, imageName); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered DIGESTS.asc: got %v, want ErrSignature", err)
	}

	for _, sigFile := range []string{imageName + ".sig", imageName + ".sig.asc"} {
		sig, err := os.ReadFile(filepath.Join(dir, sigFile))
		if err != nil {
			t.Fatal(err)
		}
		if who, err := CheckDetached(bytes.NewReader(image), sig, kr); err != nil {
			t.Errorf("%s: %v", sigFile, err)
		} else if !strings.Contains(who, keyID) {
			t.Errorf("%s: signer %q", sigFile, who)
		}
		if _, err := CheckDetached(bytes.NewReader(image[1:]), sig, kr); !errors.Is(err, ErrSignature) {
			t.Errorf("%s over other bytes: got %v, want ErrSignature", sigFile, err)
		}
	}
	// A key gpg made is not one the test made in-process.
	if _, _, err := CheckDigests(asc, keyring(t, newSigner(t, "Someone Else")), imageName); !errors.Is(err, ErrSignature) {
		t.Errorf("other keyring: got %v, want ErrSignature", err)
	}
}

var sha512HexRE = regexp.MustCompile(`^[0-9a-f]{128}$`)

// FuzzCheckDigests feeds random digests files (mutations of a genuinely
// signed one) to CheckDigests and to its parser: nothing panics, and a
// SHA-512 is only ever returned from signed text.
func FuzzCheckDigests(f *testing.F) {
	signer := newSigner(f, "Upstream Signer")
	kr := keyring(f, signer)
	text := flatcarDigests(map[string][]byte{imageName: []byte("image")})
	good := clearsignText(f, signer, text)
	f.Add(good, imageName)
	f.Add(append(bytes.Clone(good), "\n# SHA512 HASH\n"+strings.Repeat("ab", 64)+"  x\n"...), "x")
	f.Add([]byte(text), imageName)
	f.Add(clearsignText(f, signer, "# SHA512 HASH\n"+strings.Repeat("AB", 64)+" *"+imageName+"\n"), imageName)
	f.Add(clearsignText(f, signer, "# SHA512 HASH\nnot a line\n"), imageName)
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n- -----BEGIN PGP SIGNATURE-----\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, file string) {
		sum, who, err := CheckDigests(data, kr, file)
		if err == nil {
			if !sha512HexRE.MatchString(sum) || who == "" {
				t.Fatalf("accepted with sha512 %q, signer %q", sum, who)
			}
			block, _ := clearsign.Decode(data)
			if block == nil || !bytes.Contains(bytes.ToLower(block.Plaintext), []byte(sum)) {
				t.Fatalf("sha512 %s is not in the signed text", sum)
			}
			if _, err := block.VerifySignature(kr.entities, nil); err != nil {
				t.Fatalf("accepted a block whose signature does not verify: %v", err)
			}
		}
		if sum, err := parseDigests(data, file); err == nil {
			if !sha512HexRE.MatchString(sum) {
				t.Fatalf("parsed sha512 %q", sum)
			}
			if !bytes.Contains(bytes.ToLower(data), []byte(sum)) || !bytes.Contains(data, []byte(file)) {
				t.Fatalf("sha512 %s for %q is not in the text", sum, file)
			}
		}
	})
}

// TestSignatureByExpiredKey: a release signed while the key was valid
// stays verifiable once the key has expired (Flatcar signs with a subkey
// it replaces every year, and older releases keep their signatures); a
// signature made after the key expired is refused.
func TestSignatureByExpiredKey(t *testing.T) {
	made := time.Now().Add(-48 * time.Hour)
	e, err := openpgp.NewEntity("Old Signer", "", "old@example.com", &packet.Config{
		Algorithm:       packet.PubKeyAlgoEdDSA,
		Time:            func() time.Time { return made },
		KeyLifetimeSecs: 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	kr := keyring(t, e)
	image := []byte("an older release")
	// What openpgp.DetachSign does, at any time (it refuses to sign with
	// a key that has expired, as it should).
	signAt := func(at time.Time) []byte {
		pub := e.PrivateKey.PublicKey
		sig := &packet.Signature{Version: pub.Version, SigType: packet.SigTypeBinary, PubKeyAlgo: pub.PubKeyAlgo,
			Hash: crypto.SHA256, CreationTime: at, IssuerKeyId: &pub.KeyId, IssuerFingerprint: pub.Fingerprint}
		h, err := sig.PrepareSign(nil)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(image)
		if err := sig.Sign(h, e.PrivateKey, nil); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := sig.Serialize(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	who, err := CheckDetached(bytes.NewReader(image), signAt(made.Add(10*time.Minute)), kr)
	if err != nil {
		t.Fatalf("signed while valid: %v", err)
	}
	if !strings.HasSuffix(who, "expired since it signed") {
		t.Errorf("signer %q does not say the key has expired", who)
	}
	_, err = CheckDetached(bytes.NewReader(image), signAt(made.Add(2*time.Hour)), kr)
	if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "had expired when it made this signature") {
		t.Errorf("signed after the key expired: got %v", err)
	}
	_, err = CheckDetached(bytes.NewReader(image), signAt(made.Add(-time.Hour)), kr)
	if !errors.Is(err, ErrSignature) {
		t.Errorf("signed before the key existed: got %v", err)
	}
	// A revoked key is refused, whenever it signed.
	sig := signAt(made.Add(10 * time.Minute))
	if err := e.RevokeKey(packet.KeyCompromised, "leaked", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDetached(bytes.NewReader(image), sig, keyring(t, e)); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked key: got %v", err)
	}
}
