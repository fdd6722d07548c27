// Package token makes and checks the per-install token a node carries on
// every call after its first contact. The token is an HMAC, under the
// cluster secret kept in etcd, of the machine id, a random value kept in
// its record (its nonce, new for every new record) and its install
// generation: any replica can check it, iPXE retries get the same one, a
// reinstall (a new generation) rotates it, and a machine deleted and added
// again (a new record, a new nonce) gets a new one, so an old disk's token
// opens nothing.
//
// Records written before etcd schema 2 have no nonce; their tokens were an
// HMAC of id and generation only (Legacy). Those stay valid for the record
// they were made for until its next reinstall (machine.Machine.LegacyToken),
// so an upgrade strands no install in flight.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// domain separates tokens of this format from Legacy ones: no input of one
// format gives the other's HMAC input.
const domain = "mayu node token v2\x00"

// For returns the token of machine id with nonce at install generation gen.
func For(secret []byte, id, nonce string, gen int) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(domain))
	// ids and nonces never contain NUL, so no two inputs collide.
	mac.Write([]byte(id))
	mac.Write([]byte{0})
	mac.Write([]byte(nonce))
	mac.Write([]byte{0})
	mac.Write([]byte(strconv.Itoa(gen)))
	return hex.EncodeToString(mac.Sum(nil))
}

// Legacy returns the token mayu made before etcd schema 2: an HMAC of the
// machine id and its generation only.
func Legacy(secret []byte, id string, gen int) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id))
	mac.Write([]byte{0})
	mac.Write([]byte(strconv.Itoa(gen)))
	return hex.EncodeToString(mac.Sum(nil))
}

// Valid reports, in constant time, whether tok is the token of id with
// nonce at gen. An empty nonce never validates: a record without one has
// only a Legacy token.
func Valid(secret []byte, id, nonce string, gen int, tok string) bool {
	if tok == "" || len(secret) == 0 || nonce == "" {
		return false
	}
	return hmac.Equal([]byte(For(secret, id, nonce, gen)), []byte(tok))
}

// ValidLegacy reports, in constant time, whether tok is the Legacy token of
// id at gen.
func ValidLegacy(secret []byte, id string, gen int, tok string) bool {
	if tok == "" || len(secret) == 0 {
		return false
	}
	return hmac.Equal([]byte(Legacy(secret, id, gen)), []byte(tok))
}

// Keys are the cluster secrets tokens are made and checked with: Current
// makes every new token; after a rotation Previous still opens what it
// opened until PreviousUntil (the install timeout later), so installs in
// flight finish and no replica refuses what another just handed out.
type Keys struct {
	Current       []byte
	Previous      []byte
	PreviousUntil time.Time
}

// Subject is what a token is bound to: one install of one machine record.
type Subject struct {
	ID         string
	Nonce      string // the record's random value; "" for a record written before schema 2
	Generation int
	// Legacy accepts the pre-schema-2 token of this generation too.
	Legacy bool
}

// Make is the token handed out to s now: under the current secret, in the
// format of its record (Legacy for a record that has no nonce yet).
func (k Keys) Make(s Subject) string {
	if s.Nonce == "" {
		return Legacy(k.Current, s.ID, s.Generation)
	}
	return For(k.Current, s.ID, s.Nonce, s.Generation)
}

// Match says which token tok is for s at now: Fresh (made with the
// current secret, this format), or one of the older ones it still
// accepts, or NoMatch.
func (k Keys) Match(s Subject, tok string, now time.Time) Match {
	secrets := [][]byte{k.Current}
	if len(k.Previous) > 0 && now.Before(k.PreviousUntil) {
		secrets = append(secrets, k.Previous)
	}
	legacy := s.Legacy || s.Nonce == ""
	found := NoMatch
	// Every candidate is checked, so the time taken says nothing about
	// which one matched.
	for i, secret := range secrets {
		if Valid(secret, s.ID, s.Nonce, s.Generation, tok) && found == NoMatch {
			found = Fresh
			if i > 0 {
				found = PreviousSecret
			}
		}
		if ValidLegacy(secret, s.ID, s.Generation, tok) && legacy && found == NoMatch {
			found = LegacyFormat
		}
	}
	return found
}

// Match is how a token matched.
type Match int

const (
	NoMatch        Match = iota
	Fresh                // the current secret, the current format
	PreviousSecret       // the secret before the last rotation, within its window
	LegacyFormat         // a pre-schema-2 token of a record that still accepts it
)

// Ok reports whether the token opens the call.
func (m Match) Ok() bool { return m != NoMatch }
