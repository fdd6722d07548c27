package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/mayu-boot/mayu/pkg/config"
)

// credentials are what mayu presents to etcd: TLS (nil for http://) and a
// user name and password (empty: none, or the certificate's CN).
type credentials struct {
	tls      *tls.Config
	username string
	password string
}

// Check reads every file node.etcd names, as Open would, so that
// `mayu -check` reports an unreadable certificate or password file, or a
// certificate that does not match its key, naming the key.
func Check(e config.Etcd) error {
	if len(e.Endpoints) == 0 {
		if _, err := serverTLS(e.Embedded); err != nil {
			return err
		}
	}
	_, err := readCredentials(e)
	return err
}

// readCredentials reads the CA, client certificate and password files of
// e. Every error names the key whose file is at fault.
func readCredentials(e config.Etcd) (credentials, error) {
	var c credentials
	if e.PasswordFile != "" {
		data, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return c, fmt.Errorf("node.etcd.password_file: %w", err)
		}
		// One line; the newline an editor or `echo` adds is not part of it.
		c.password = strings.TrimRight(string(data), "\r\n")
		if c.password == "" {
			return c, fmt.Errorf("node.etcd.password_file: %s is empty", e.PasswordFile)
		}
		c.username = e.Username
	}
	if !e.TLS() {
		return c, nil
	}
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pool, err := readPool("node.etcd.ca_file", e.CAFile)
		if err != nil {
			return c, err
		}
		c.tls.RootCAs = pool
	}
	if e.CertFile != "" {
		cert, err := readKeyPair("node.etcd.cert_file", e.CertFile, "node.etcd.key_file", e.KeyFile)
		if err != nil {
			return c, err
		}
		c.tls.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// serverTLS checks the embedded etcd's certificate files and returns the
// TLS settings it serves with (zero for http://).
func serverTLS(em config.Embedded) (transport.TLSInfo, error) {
	if em.CertFile == "" {
		return transport.TLSInfo{}, nil
	}
	if _, err := readKeyPair("node.etcd.embedded.cert_file", em.CertFile, "node.etcd.embedded.key_file", em.KeyFile); err != nil {
		return transport.TLSInfo{}, err
	}
	info := transport.TLSInfo{CertFile: em.CertFile, KeyFile: em.KeyFile}
	if em.ClientCAFile != "" {
		if _, err := readPool("node.etcd.embedded.client_ca_file", em.ClientCAFile); err != nil {
			return transport.TLSInfo{}, err
		}
		info.TrustedCAFile, info.ClientCertAuth = em.ClientCAFile, true
	}
	return info, nil
}

func readPool(key, path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", key, path)
	}
	return pool, nil
}

func readKeyPair(certKey, certPath, keyKey, keyPath string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certKey, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", keyKey, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s %s, %s %s: %w", certKey, certPath, keyKey, keyPath, err)
	}
	return cert, nil
}

// explain turns the error of a first request to etcd into one that says
// what to fix. etcd's own errors are clear enough for a wrong password or
// a missing permission, but a refused TLS handshake shows up only as a
// request that times out: then each endpoint is dialled once more, by
// hand, to find out what the handshake says.
func explain(ctx context.Context, err error, e config.Etcd, endpoints []string, c credentials) error {
	who := "mayu"
	switch {
	case c.username != "":
		who = fmt.Sprintf("user %q", c.username)
	case c.tls != nil && len(c.tls.Certificates) > 0 && c.tls.Certificates[0].Leaf != nil:
		// Without a password etcd takes the user from the certificate.
		who = fmt.Sprintf("user %q (the CN of node.etcd.cert_file)", c.tls.Certificates[0].Leaf.Subject.CommonName)
	}
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed) || strings.Contains(err.Error(), rpctypes.ErrAuthFailed.Error()):
		return fmt.Errorf("etcd %v refused %s: %w (check node.etcd.username and the password in node.etcd.password_file)", endpoints, who, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied) || strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error()):
		return fmt.Errorf("etcd %v: %s may not read or write %s: %w (grant its role readwrite on the prefix: etcdctl role grant-permission ROLE --prefix=true readwrite %s)",
			endpoints, who, e.Prefix, err, e.Prefix)
	case errors.Is(err, rpctypes.ErrUserEmpty) || strings.Contains(err.Error(), rpctypes.ErrUserEmpty.Error()):
		return fmt.Errorf("etcd %v has authentication on and mayu sent no user: %w (set node.etcd.username and node.etcd.password_file, or a client certificate whose CN is an etcd user)", endpoints, err)
	}
	for _, ep := range endpoints {
		if why := probe(ctx, ep, e, c.tls); why != nil {
			return fmt.Errorf("etcd %v is not reachable: %w", endpoints, why)
		}
	}
	return fmt.Errorf("etcd %v is not reachable: %w (check node.etcd.endpoints)", endpoints, err)
}

// probe dials endpoint and reports a TLS reason it cannot be used, or nil
// if it finds none.
func probe(ctx context.Context, endpoint string, e config.Etcd, tc *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if tc == nil {
		// An http:// endpoint: does it speak TLS instead? The probe sends
		// nothing after the handshake and trusts nothing it learns.
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
		if conn, err := d.DialContext(ctx, "tcp", u.Host); err == nil {
			conn.Close()
			return fmt.Errorf("%s serves TLS: use https:// (and node.etcd.ca_file)", endpoint)
		}
		return nil
	}
	cfg := tc.Clone()
	cfg.ServerName = u.Hostname()
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err == nil {
		// Under TLS 1.3 the server judges the client certificate after the
		// client has finished: its verdict is the first thing read.
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err = conn.Read(make([]byte, 1))
		if err == nil || isTimeout(err) {
			return nil
		}
	}
	var verr *tls.CertificateVerificationError
	var herr x509.HostnameError
	switch {
	case errors.As(err, &herr):
		return fmt.Errorf("%s: etcd's server certificate is not for this address: %w (give its certificate this host name or IP address as a SAN)", endpoint, err)
	case errors.As(err, &verr):
		return fmt.Errorf("%s: etcd's server certificate is not trusted: %w (node.etcd.ca_file must hold the CA that signed it)", endpoint, err)
	case strings.Contains(err.Error(), "remote error"):
		if len(tc.Certificates) == 0 {
			return fmt.Errorf("%s refused the TLS handshake: %w (etcd asks for a client certificate: set node.etcd.cert_file and node.etcd.key_file)", endpoint, err)
		}
		return fmt.Errorf("%s refused mayu's client certificate %s: %w (it must be signed by a CA in etcd's --trusted-ca-file)", endpoint, e.CertFile, err)
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return nil
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) {
		return fmt.Errorf("%s does not speak TLS: %w (use http://, or start etcd with --cert-file and --key-file)", endpoint, err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
