package artifact

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// ErrSignature: a signature does not verify against the keyring (bad,
// from an unknown key, or over other bytes).
var ErrSignature = errors.New("bad signature")

// Keyring is a parsed set of OpenPGP public keys
// (github.com/ProtonMail/go-crypto/openpgp).
type Keyring struct {
	entities openpgp.EntityList
}

var armorStart = []byte("-----BEGIN ")

// ParseKeyring reads armored (or binary) public keys; an empty or
// unparsable keyring is an error that says so.
func ParseKeyring(data []byte) (*Keyring, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("keyring is empty: give the upstream's OpenPGP public key (armored or binary)")
	}
	var el openpgp.EntityList
	if bytes.HasPrefix(trimmed, armorStart) {
		// One armored block per key, as a file of several exported keys
		// has them (ReadArmoredKeyRing reads the first only).
		for rest := trimmed; len(rest) > 0; {
			next := bytes.Index(rest[1:], armorStart)
			block := rest
			if next >= 0 {
				block, rest = rest[:next+1], rest[next+1:]
			} else {
				rest = nil
			}
			keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(block))
			if err != nil {
				return nil, fmt.Errorf("keyring is not an OpenPGP public key: %v", err)
			}
			el = append(el, keys...)
		}
	} else {
		var err error
		if el, err = openpgp.ReadKeyRing(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("keyring is not an OpenPGP public key: %v", err)
		}
	}
	if len(el) == 0 {
		return nil, errors.New("keyring holds no OpenPGP key")
	}
	for _, e := range el {
		// The keyring is stored in the catalogue for everyone to read.
		if e.PrivateKey != nil {
			return nil, fmt.Errorf("keyring holds the private key %s: give only the public key (gpg --export --armor)", e.PrimaryKey.KeyIdString())
		}
	}
	return &Keyring{entities: el}, nil
}

// CheckDigests verifies a clearsigned digests file in Flatcar's format
// (<file>.DIGESTS.asc, openpgp/clearsign) against kr, and returns the
// SHA-512 (hex) it lists for file (the base name of the artifact's URL)
// and who signed it ("key 0123ABCD... (uid)"). Flatcar's format:
//
//	# MD5 HASH
//	<md5>  <file>
//	# SHA1 HASH
//	<sha1>  <file>
//	# SHA512 HASH
//	<sha512>  <file>
//
// An unsigned or badly signed file is ErrSignature (wrapped); a file that
// lists no SHA-512 for file says so.
//
// Only the signed text is read: whatever comes before the clearsigned
// block or after its signature (anyone on the way could have added it)
// is ignored.
func CheckDigests(clearsigned []byte, kr *Keyring, file string) (sha512hex, signer string, err error) {
	if kr == nil || len(kr.entities) == 0 {
		return "", "", errors.New("checking the digests file: no keyring")
	}
	block, _ := clearsign.Decode(clearsigned)
	if block == nil {
		return "", "", fmt.Errorf("%w: the digests file is not clearsigned (no complete -----BEGIN PGP SIGNED MESSAGE----- block)", ErrSignature)
	}
	if block.ArmoredSignature == nil || block.ArmoredSignature.Type != openpgp.SignatureType {
		return "", "", fmt.Errorf("%w: the digests file's signature block is not a PGP SIGNATURE", ErrSignature)
	}
	sig, err := io.ReadAll(io.LimitReader(block.ArmoredSignature.Body, maxSignature+1))
	if err != nil {
		return "", "", fmt.Errorf("%w: the digests file's signature: %v", ErrSignature, err)
	}
	if len(sig) > maxSignature {
		return "", "", fmt.Errorf("%w: the digests file's signature is larger than %d bytes", ErrSignature, maxSignature)
	}
	signer, err = kr.verify(bytes.NewReader(block.Bytes), sig, "the digests file", false)
	if err != nil {
		return "", "", err
	}
	sha512hex, err = parseDigests(block.Plaintext, file)
	if err != nil {
		return "", "", fmt.Errorf("digests file signed by %s: %w", signer, err)
	}
	return sha512hex, signer, nil
}

// maxSignature bounds a signature's packets: a real one is a few hundred
// bytes, a few KiB with many signers.
const maxSignature = 64 << 10

// CheckDetached verifies a detached signature (armored or binary, the
// upstream's <file>.sig) of the bytes in signed against kr; it returns who
// signed. ErrSignature (wrapped) when it does not verify.
func CheckDetached(signed io.Reader, sig []byte, kr *Keyring) (signer string, err error) {
	if kr == nil || len(kr.entities) == 0 {
		return "", errors.New("checking the detached signature: no keyring")
	}
	if trimmed := bytes.TrimSpace(sig); bytes.HasPrefix(trimmed, armorStart) {
		block, err := armor.Decode(bytes.NewReader(trimmed))
		if err != nil {
			return "", fmt.Errorf("%w: the detached signature is not armored OpenPGP: %v", ErrSignature, err)
		}
		if block.Type != openpgp.SignatureType {
			return "", fmt.Errorf("%w: the detached signature is a %s, not a PGP SIGNATURE", ErrSignature, hostile.Clip(hostile.Escape(block.Type), 40))
		}
		if sig, err = io.ReadAll(io.LimitReader(block.Body, maxSignature+1)); err != nil {
			return "", fmt.Errorf("%w: the detached signature: %v", ErrSignature, err)
		}
	}
	if len(sig) > maxSignature {
		return "", fmt.Errorf("%w: the detached signature is larger than %d bytes", ErrSignature, maxSignature)
	}
	return kr.verify(signed, sig, "the detached signature", true)
}

// verify checks the signature packets in sig over signed. binary: only a
// signature over the exact bytes counts (a text signature would hold for
// bytes whose line ends were changed).
func (kr *Keyring) verify(signed io.Reader, sig []byte, what string, binary bool) (string, error) {
	s, entity, err := openpgp.VerifyDetachedSignature(kr.entities, signed, bytes.NewReader(sig), nil)
	note := ""
	if errors.Is(err, pgperrors.ErrKeyExpired) && entity != nil && s != nil {
		// The signature is good, by a key that has expired since (a
		// release signed with last year's signing subkey): it counts if
		// the key was valid when it signed, as gpg has it. A revoked
		// key is refused before this (ErrKeyRevoked).
		if validWhenSigned(entity, s) {
			err, note = nil, ", expired since it signed"
		} else {
			err = fmt.Errorf("the key had expired when it made this signature (%s)", s.CreationTime.UTC().Format(time.RFC3339))
		}
	}
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		if ids := issuers(sig); len(ids) > 0 {
			return "", fmt.Errorf("%w: %s was made by key %s, which is not in the keyring (%s)", ErrSignature, what, strings.Join(ids, ", "), kr.describe())
		}
		return "", fmt.Errorf("%w: %s holds no signature", ErrSignature, what)
	case err != nil:
		// VerifyDetachedSignature also returns the signer when the
		// signature is good but the key has expired or been revoked:
		// that is refused too.
		by := ""
		if ids := issuers(sig); len(ids) > 0 {
			by = "key " + strings.Join(ids, ", ")
		}
		if entity != nil {
			by = describeEntity(entity)
		}
		if by == "" {
			return "", fmt.Errorf("%w: %s does not verify: %v", ErrSignature, what, err)
		}
		return "", fmt.Errorf("%w: %s (%s) does not verify: %v", ErrSignature, what, by, err)
	case entity == nil || s == nil:
		return "", fmt.Errorf("%w: %s does not verify", ErrSignature, what)
	case binary && s.SigType != packet.SigTypeBinary:
		return "", fmt.Errorf("%w: %s is a text signature (type %#x), not one over the file's exact bytes", ErrSignature, what, uint8(s.SigType))
	}
	return describeEntity(entity) + note, nil
}

// validWhenSigned reports whether the key that made s (a subkey of e or
// its primary key) was valid at the time s says it was made, and s has
// not expired itself.
func validWhenSigned(e *openpgp.Entity, s *packet.Signature) bool {
	at := s.CreationTime
	if s.IssuerKeyId == nil || s.SigExpired(time.Now()) {
		return false
	}
	self, _ := e.PrimarySelfSignature()
	if self == nil || e.PrimaryKey.KeyExpired(self, at) {
		return false
	}
	if *s.IssuerKeyId == e.PrimaryKey.KeyId {
		return true
	}
	for _, sub := range e.Subkeys {
		if sub.PublicKey.KeyId == *s.IssuerKeyId {
			return sub.Sig != nil && !sub.PublicKey.KeyExpired(sub.Sig, at)
		}
	}
	return false
}

// issuers lists the key ids the signature packets in sig name.
func issuers(sig []byte) []string {
	var ids []string
	r := packet.NewReader(bytes.NewReader(sig))
	for range 16 {
		p, err := r.Next()
		if err != nil {
			break
		}
		if s, ok := p.(*packet.Signature); ok && s.IssuerKeyId != nil {
			ids = append(ids, fmt.Sprintf("%016X", *s.IssuerKeyId))
		}
	}
	return ids
}

// describeEntity is how a signer is shown to people: "key <primary key
// id> (<uid>)", the id gpg --list-keys shows and the upstream publishes
// (a signature is often made by a signing subkey).
func describeEntity(e *openpgp.Entity) string {
	s := "key " + e.PrimaryKey.KeyIdString()
	if id := e.PrimaryIdentity(); id != nil {
		s += " (" + hostile.Clip(hostile.Escape(id.Name), 200) + ")"
	}
	return s
}

// describe lists the keyring's keys for an error.
func (kr *Keyring) describe() string {
	var keys []string
	for _, e := range kr.entities {
		keys = append(keys, e.PrimaryKey.KeyIdString())
		for _, sub := range e.Subkeys {
			keys = append(keys, sub.PublicKey.KeyIdString())
		}
	}
	return "it holds " + strings.Join(keys, ", ")
}

var (
	digestsSectionRE = regexp.MustCompile(`^#\s*([A-Za-z0-9-]+)\s+HASH\s*$`)
	sha512RE         = regexp.MustCompile(`^[0-9a-fA-F]{128}$`)
)

// parseDigests returns the SHA-512 listed for file in a digests file in
// Flatcar's format (the output of md5sum, sha1sum and sha512sum, each
// under a "# <ALGORITHM> HASH" line).
func parseDigests(text []byte, file string) (string, error) {
	if file == "" {
		return "", errors.New("no file name to look up in the digests file")
	}
	var found string
	section := ""
	sawSHA512 := false
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if m := digestsSectionRE.FindStringSubmatch(line); m != nil {
			section = strings.ToUpper(m[1])
			sawSHA512 = sawSHA512 || section == "SHA512"
			continue
		}
		if strings.HasPrefix(line, "#") || section != "SHA512" {
			continue
		}
		// "<hex>  <name>", or "<hex> *<name>" (sha512sum -b).
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimLeft(name, " \t"), "*")
		if !ok || !sha512RE.MatchString(sum) || name == "" {
			return "", fmt.Errorf("line %d of the SHA512 section is not \"<sha512>  <file>\": %q", n, hostile.Clip(line, 200))
		}
		if name != file {
			continue
		}
		sum = strings.ToLower(sum)
		if found != "" && found != sum {
			return "", fmt.Errorf("the digests file lists two different SHA-512 for %s", hostile.Clip(hostile.Escape(file), 200))
		}
		found = sum
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading the digests file: %w", err)
	}
	switch {
	case !sawSHA512:
		return "", errors.New(`the digests file has no "# SHA512 HASH" section`)
	case found == "":
		return "", fmt.Errorf("the digests file lists no SHA-512 for %s", hostile.Clip(hostile.Escape(file), 200))
	}
	return found, nil
}
