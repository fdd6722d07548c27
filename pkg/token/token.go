// Package token makes and checks the per-install token a node carries on
// every call after its first contact. The token is an HMAC of the machine id
// and its install generation under the cluster secret kept in etcd, so any
// replica can check it, iPXE retries get the same one, and a reinstall
// (a new generation) rotates it.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// For returns the token of machine id at install generation gen.
func For(secret []byte, id string, gen int) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id))
	mac.Write([]byte{0}) // ids never contain NUL, so id|gen pairs cannot collide
	mac.Write([]byte(strconv.Itoa(gen)))
	return hex.EncodeToString(mac.Sum(nil))
}

// Valid reports, in constant time, whether tok is the token of id at gen.
func Valid(secret []byte, id string, gen int, tok string) bool {
	if tok == "" || len(secret) == 0 {
		return false
	}
	return hmac.Equal([]byte(For(secret, id, gen)), []byte(tok))
}
