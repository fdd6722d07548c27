package etcdtest

import (
	"crypto/x509/pkix"
	"testing"

	"github.com/mayu-boot/mayu/internal/testcert"
)

// CA is a certificate authority made for one test (internal/testcert),
// its certificates written as PEM files under the test's temporary
// directory. Tests hand its files to etcd (--trusted-ca-file) and to mayu
// (node.etcd.ca_file) exactly as an operator would.
type CA struct {
	// File is the CA certificate, PEM.
	File string

	ca  *testcert.CA
	dir string
}

// KeyPair is a certificate issued by a CA and its private key, as PEM
// files.
type KeyPair struct {
	Cert, Key string
}

// NewCA makes a fresh CA named name (its subject CN).
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, dir := testcert.NewCA(t, name), t.TempDir()
	return &CA{File: ca.Write(t, dir, name+"-ca"), ca: ca, dir: dir}
}

// Server issues a certificate for a server reachable at hosts (IP addresses
// or DNS names), usable by etcd both to serve clients and, as etcd does, as
// a client of its peers.
func (ca *CA) Server(t testing.TB, name string, hosts ...string) KeyPair {
	t.Helper()
	cert, key := ca.ca.Server(t, name, hosts...).Write(t, ca.dir, name)
	return KeyPair{Cert: cert, Key: key}
}

// Client issues a client certificate whose subject CN is cn: with
// --client-cert-auth and auth enabled, etcd takes the CN as the user name
// when the client sends no password.
func (ca *CA) Client(t testing.TB, cn string) KeyPair {
	t.Helper()
	cert, key := ca.ca.Client(t, pkix.Name{CommonName: cn}).Write(t, ca.dir, cn)
	return KeyPair{Cert: cert, Key: key}
}
