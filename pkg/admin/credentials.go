package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"

	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
)

// minTokenLength is the shortest token accepted: 16 characters of a
// random token are far beyond guessing over the network.
const minTokenLength = 16

// legacyTokenName is the name the one token of node.admin_token_file gets.
const legacyTokenName = "admin-token-file"

// tokenName is what a token's name must look like: it is written into the
// audit trail and the log.
var tokenName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}$`)

// TokensFile is the format of node.admin.tokens_file:
//
//	tokens:
//	  - {name: alice, role: admin, token: "…"}
//	  - {name: grafana, role: viewer, token: "…"}
//	certificates:
//	  - {subject: "CN=alice,O=ops", role: admin}
//
// A certificate's subject is written as RFC 2253 (what
// `openssl x509 -noout -subject -nameopt RFC2253` prints, and Go's
// pkix.Name.String()); it counts only when node.admin.client_ca_file is set
// (the certificate is then verified against it).
type TokensFile struct {
	Tokens       []TokenEntry       `yaml:"tokens"`
	Certificates []CertificateEntry `yaml:"certificates"`
}

// TokenEntry is one named bearer token.
type TokenEntry struct {
	Name  string `yaml:"name"`
	Role  string `yaml:"role"`
	Token string `yaml:"token"`
}

// CertificateEntry gives a client certificate's subject a role.
type CertificateEntry struct {
	Subject string `yaml:"subject"`
	Role    string `yaml:"role"`
}

// Identity is who made a call: a token's name or a certificate's subject.
type Identity struct {
	Name string
	Via  string // api.ViaToken or api.ViaCertificate
	Role string // api.RoleViewer or api.RoleAdmin
}

type token struct {
	name, role string
	sum        [sha256.Size]byte
}

// Credentials are what the admin API checks callers against, read from the
// files of node.admin (and node.admin_token_file). They never change;
// reloading makes new ones.
type Credentials struct {
	tokens   []token
	subjects map[string]string // certificate subject → role
	cert     *tls.Certificate  // nil: plain HTTP
	clientCA *x509.CertPool    // nil: no client certificate asked for
}

// NewTokenCredentials are credentials of one admin token, for tests and
// tools; an empty token refuses every call.
func NewTokenCredentials(name, tok string) *Credentials {
	c := &Credentials{}
	if tok != "" {
		c.tokens = []token{{name: name, role: api.RoleAdmin, sum: sha256.Sum256([]byte(tok))}}
	}
	return c
}

// LoadCredentials reads the tokens file (or the deprecated single token
// file), the certificate and key, and the client CA that cfg names. Every
// error names the config key and the file.
func LoadCredentials(cfg config.Node) (*Credentials, error) {
	c := &Credentials{}
	a := cfg.Admin
	switch {
	case a.TokensFile != "":
		data, err := os.ReadFile(a.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("node.admin.tokens_file: %w", err)
		}
		if c.tokens, c.subjects, err = parseTokens(data); err != nil {
			return nil, fmt.Errorf("node.admin.tokens_file %s: %w", a.TokensFile, err)
		}
	case cfg.AdminTokenFile != "":
		tok, err := readLegacyToken(cfg.AdminTokenFile)
		if err != nil {
			return nil, err
		}
		c.tokens = []token{{name: legacyTokenName, role: api.RoleAdmin, sum: sha256.Sum256([]byte(tok))}}
	}
	if a.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("node.admin.cert_file / node.admin.key_file: %w", err)
		}
		c.cert = &cert
	}
	if a.ClientCAFile != "" {
		data, err := os.ReadFile(a.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("node.admin.client_ca_file: %w", err)
		}
		c.clientCA = x509.NewCertPool()
		if !c.clientCA.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("node.admin.client_ca_file: %s holds no PEM certificate", a.ClientCAFile)
		}
	}
	return c, nil
}

// parseTokens reads a tokens file strictly, like the config: unknown keys,
// a second document, duplicates, empty or short tokens and unknown roles
// are errors. An error never shows a token.
func parseTokens(data []byte) ([]token, map[string]string, error) {
	var f TokensFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New("the file is empty")
		}
		// yaml's messages quote keys and types, never values.
		return nil, nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("a second YAML document (after ---); the tokens file is one document")
	}
	var errs []error
	addf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var tokens []token
	names := map[string]int{}
	sums := map[[sha256.Size]byte]int{}
	for i, e := range f.Tokens {
		at := fmt.Sprintf("tokens[%d]", i)
		switch {
		case e.Name == "":
			addf("%s.name: required", at)
		case !tokenName.MatchString(e.Name):
			addf("%s.name: %q is not a valid name (%s)", at, clip(e.Name), tokenName)
		default:
			if j, dup := names[e.Name]; dup {
				addf("%s.name: %q is also the name of tokens[%d]", at, e.Name, j)
			}
			names[e.Name] = i
			at += " (" + e.Name + ")"
		}
		checkRole(addf, at, e.Role)
		tok := e.Token
		switch {
		case tok == "":
			addf("%s.token: required", at)
		case len(tok) < minTokenLength:
			addf("%s.token: %d characters; use at least %d (e.g. `head -c 32 /dev/urandom | base64`)", at, len(tok), minTokenLength)
		case strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
			addf("%s.token: holds a space or a control character, which an Authorization header cannot carry", at)
		}
		sum := sha256.Sum256([]byte(tok))
		if j, dup := sums[sum]; dup && tok != "" {
			addf("%s.token: the same token as tokens[%d]; every token must be different, so the audit trail knows who made a change", at, j)
		}
		sums[sum] = i
		tokens = append(tokens, token{name: e.Name, role: e.Role, sum: sum})
	}
	subjects := map[string]string{}
	for i, e := range f.Certificates {
		at := fmt.Sprintf("certificates[%d]", i)
		switch _, dup := subjects[e.Subject]; {
		case strings.TrimSpace(e.Subject) == "":
			addf("%s.subject: required (RFC 2253, e.g. \"CN=alice,O=ops\")", at)
		case dup:
			addf("%s.subject: %q is named twice", at, e.Subject)
		}
		checkRole(addf, at, e.Role)
		subjects[e.Subject] = e.Role
	}
	if len(f.Tokens) == 0 && len(f.Certificates) == 0 {
		addf("names no token and no certificate: nobody could call the admin API")
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return tokens, subjects, nil
}

func checkRole(addf func(string, ...any), at, role string) {
	switch role {
	case api.RoleViewer, api.RoleAdmin:
	case "":
		addf("%s.role: required (viewer or admin)", at)
	default:
		addf("%s.role: %q is not a role (viewer: read only; admin: any change)", at, clip(role))
	}
}

// readLegacyToken reads node.admin_token_file: one token, nothing else.
func readLegacyToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("node.admin_token_file: %w (create it, e.g. `head -c 32 /dev/urandom | base64 > %s`)", err, path)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < minTokenLength {
		return "", fmt.Errorf("node.admin_token_file: %s holds %d characters; use a token of at least %d", path, len(tok), minTokenLength)
	}
	return tok, nil
}

// token finds the token sent. Every entry is compared, in constant time
// each (digests of equal length), so the time taken says nothing about
// which token came close.
func (c *Credentials) token(sent string) (Identity, bool) {
	sum := sha256.Sum256([]byte(sent))
	var found Identity
	ok := 0
	for _, t := range c.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			found = Identity{Name: t.name, Via: api.ViaToken, Role: t.role}
			ok = 1
		}
	}
	return found, ok == 1
}

// TLS says whether the admin API speaks HTTPS with these credentials.
func (c *Credentials) TLS() bool { return c.cert != nil }

// Keeper holds the current credentials of a replica's admin API and swaps
// them on Reload; requests and TLS handshakes read the current ones.
type Keeper struct {
	cur     atomic.Pointer[Credentials]
	load    func() (*Credentials, error)
	log     *slog.Logger
	metrics *adminMetrics
}

// NewKeeper loads the credentials with load (LoadCredentials of the
// config, typically); Reload loads them again the same way.
func NewKeeper(load func() (*Credentials, error), log *slog.Logger) (*Keeper, error) {
	c, err := load()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keeper{load: load, log: log}
	k.cur.Store(c)
	return k, nil
}

// StaticKeeper always holds c.
func StaticKeeper(c *Credentials) *Keeper {
	k := &Keeper{load: func() (*Credentials, error) { return c, nil }, log: slog.New(slog.DiscardHandler)}
	k.cur.Store(c)
	return k
}

// Current are the credentials now.
func (k *Keeper) Current() *Credentials { return k.cur.Load() }

// Reload reads the files again (SIGHUP). A reload that fails keeps the
// credentials in use, says why in the log and counts it: a typo in the
// tokens file must not lock every operator out. A reload cannot turn TLS
// on or off, as the listener was opened for one or the other.
func (k *Keeper) Reload() error {
	c, err := k.load()
	if err == nil && c.TLS() != k.Current().TLS() {
		err = errors.New("TLS cannot be turned on or off by a reload (node.admin.cert_file): restart mayu")
	}
	if err != nil {
		k.count("failed")
		k.log.Error("admin credentials not reloaded; the previous ones stay in use", "err", err)
		return err
	}
	k.cur.Store(c)
	k.count("ok")
	k.log.Info("admin credentials reloaded", "tokens", len(c.tokens), "certificate_subjects", len(c.subjects),
		"tls", c.TLS(), "client_ca", c.clientCA != nil)
	return nil
}

func (k *Keeper) count(result string) {
	if k.metrics != nil {
		k.metrics.reloads.WithLabelValues(result).Inc()
	}
}

// TLSConfig serves the current certificate and asks for a client
// certificate under the current client CA, both read at each handshake so
// that a reload takes effect on the next connection.
//
// The handshake requests a client certificate (advertising the CA) but
// does not refuse a connection without one: the auth middleware verifies
// it against the client CA and refuses with a 401 that says what is
// missing, counted in mayu_admin_refused_total{reason="bad_cert"}, which a
// failed handshake could do neither of. TLS still proves the client holds
// the certificate's key.
func (k *Keeper) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := k.Current()
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*c.cert},
			}
			if c.clientCA != nil {
				cfg.ClientAuth = tls.RequestClientCert
				cfg.ClientCAs = c.clientCA
			}
			return cfg, nil
		},
	}
}
