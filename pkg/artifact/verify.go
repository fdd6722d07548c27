package artifact

import (
	"errors"
	"io"
)

// ErrSignature: a signature does not verify against the keyring (bad,
// from an unknown key, or over other bytes).
var ErrSignature = errors.New("bad signature")

// Keyring is a parsed set of OpenPGP public keys
// (github.com/ProtonMail/go-crypto/openpgp).
type Keyring struct {
	// SKELETON: helper A fills this in (openpgp.EntityList).
}

// ParseKeyring reads armored (or binary) public keys; an empty or
// unparsable keyring is an error that says so.
func ParseKeyring(data []byte) (*Keyring, error) { panic("skeleton") }

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
func CheckDigests(clearsigned []byte, kr *Keyring, file string) (sha512hex, signer string, err error) {
	panic("skeleton")
}

// CheckDetached verifies a detached signature (armored or binary, the
// upstream's <file>.sig) of the bytes in signed against kr; it returns who
// signed. ErrSignature (wrapped) when it does not verify.
func CheckDetached(signed io.Reader, sig []byte, kr *Keyring) (signer string, err error) {
	panic("skeleton")
}
