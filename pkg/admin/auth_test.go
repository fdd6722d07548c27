package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/testcert"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
)

const (
	adminToken  = "admin-token-0123456789"
	viewerToken = "viewer-token-0123456789"
)

const tokensYAML = `tokens:
  - {name: alice, role: admin, token: ` + adminToken + `}
  - {name: grafana, role: viewer, token: ` + viewerToken + `}
certificates:
  - {subject: "CN=bob,O=ops", role: admin}
  - {subject: "CN=carol,O=ops", role: viewer}
`

type authEnv struct {
	h     *handler
	trail *testfakes.Audit
	reg   *testfakes.Machines
	srv   *httptest.Server
}

// newAuthEnv serves the admin API on fakes with the credentials of
// tokensYAML, over TLS with ca's client CA when ca is not nil.
func newAuthEnv(t *testing.T, ca *testcert.CA) *authEnv {
	t.Helper()
	dir := t.TempDir()
	node := config.Node{Admin: config.Admin{TokensFile: filepath.Join(dir, "tokens.yaml")}}
	testcert.WriteFile(t, node.Admin.TokensFile, []byte(tokensYAML))
	if ca != nil {
		node.Admin.CertFile, node.Admin.KeyFile = ca.Server(t, "mayu").Write(t, dir, "server")
		node.Admin.ClientCAFile = ca.Write(t, dir, "clients")
	}
	keeper, err := NewKeeper(func() (*Credentials, error) { return LoadCredentials(node) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := config.Cluster{Static: config.Static{Subnet: netip.MustParsePrefix("10.0.1.0/24"),
		Range: config.Range{Start: netip.MustParseAddr("10.0.1.10"), End: netip.MustParseAddr("10.0.1.20")}}}
	reg := testfakes.NewMachines(cl)
	reg.ReplicaName = "r1"
	trail := testfakes.NewAudit()
	a, h := build(Options{Machines: reg, Leases: testfakes.NewLeases(), Config: &config.Config{}, Credentials: keeper, Audit: trail})
	srv := httptest.NewUnstartedServer(h)
	if ca != nil {
		srv.TLS = keeper.TLSConfig()
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return &authEnv{h: a, trail: trail, reg: reg, srv: srv}
}

func TestTokensFileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"empty":        {"", "the file is empty"},
		"unknown key":  {"tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh, roel: x}\n", `field roel not found`},
		"unknown role": {"tokens:\n  - {name: a, role: root, token: 0123456789abcdefgh}\n", `tokens[0] (a).role: "root" is not a role`},
		"no role":      {"tokens:\n  - {name: a, token: 0123456789abcdefgh}\n", `tokens[0] (a).role: required`},
		"short token":  {"tokens:\n  - {name: a, role: admin, token: short}\n", `tokens[0] (a).token: 5 characters; use at least 16`},
		"empty token":  {"tokens:\n  - {name: a, role: admin, token: \"\"}\n", `tokens[0] (a).token: required`},
		"space":        {"tokens:\n  - {name: a, role: admin, token: \"0123456789 abcdefgh\"}\n", `holds a space`},
		"dup name": {"tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh}\n  - {name: a, role: viewer, token: 0123456789abcdefgX}\n",
			`tokens[1].name: "a" is also the name of tokens[0]`},
		"dup token": {"tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh}\n  - {name: b, role: viewer, token: 0123456789abcdefgh}\n",
			`tokens[1] (b).token: the same token as tokens[0]`},
		"bad name":     {"tokens:\n  - {name: \"a b\", role: admin, token: 0123456789abcdefgh}\n", `tokens[0].name: "a b" is not a valid name`},
		"nobody":       {"tokens: []\n", "names no token and no certificate"},
		"cert no role": {"certificates:\n  - {subject: \"CN=x\"}\n", "certificates[0].role: required"},
		"two docs":     {"tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh}\n---\ntokens: []\n", "a second YAML document"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o600)
			_, err := LoadCredentials(config.Node{Admin: config.Admin{TokensFile: path}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "node.admin.tokens_file") {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// A token is never shown.
			if strings.Contains(err.Error(), "0123456789abcdefgh") {
				t.Errorf("the error shows a token: %v", err)
			}
		})
	}
}

// changeRoutes are every route of the router with a method that is not a
// read, with {id} filled in: a route added later is covered by the tests
// below without touching them.
func changeRoutes(t *testing.T, h *handler) [][2]string {
	t.Helper()
	var out [][2]string
	err := h.router(nil).Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return fmt.Errorf("%s has no methods: every admin route names its methods", tpl)
		}
		path := strings.NewReplacer("{id}", "srv-01", "{mac}", "52:54:00:00:00:01", "{name}", "img-1").Replace(tpl)
		if strings.Contains(path, "{") {
			return fmt.Errorf("%s: a route variable the test does not know", tpl)
		}
		for _, m := range methods {
			if !isRead(m) {
				out = append(out, [2]string{m, path})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 4 {
		t.Fatalf("only %d change routes found: %v", len(out), out)
	}
	return out
}

func do(t *testing.T, c *http.Client, method, url, auth, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// A viewer may read but is refused every change route, each refusal
// counted and logged (not written to the audit trail); the machine is
// untouched.
func TestViewerRefusedOnEveryChangeRoute(t *testing.T) {
	e := newAuthEnv(t, nil)
	c := e.srv.Client()
	if code, body := do(t, c, "POST", e.srv.URL+"/api/v1/machines", adminToken, `{"id":"srv-01"}`); code != http.StatusCreated {
		t.Fatalf("add as admin: %d %s", code, body)
	}
	before := len(e.trail.Entries())
	routes := changeRoutes(t, e.h)
	for _, rt := range routes {
		code, body := do(t, c, rt[0], e.srv.URL+rt[1], viewerToken, `{"k":"v"}`)
		if code != http.StatusForbidden || !strings.Contains(body, `token \"grafana\" has the role viewer`) {
			t.Errorf("%s %s as viewer: %d %s", rt[0], rt[1], code, body)
		}
	}
	// Refusals change nothing and are not written to the trail: a
	// viewer's token replaying them must not push real changes out of it.
	if entries := e.trail.Entries()[before:]; len(entries) != 0 {
		t.Fatalf("%d refusals written to the audit trail: %+v", len(entries), entries)
	}
	if got := testutil.ToFloat64(e.h.metrics.refused.WithLabelValues(refusedWrongRole)); got != float64(len(routes)) {
		t.Errorf("wrong_role counted %v times", got)
	}
	if m, _ := e.reg.Get(context.Background(), "srv-01"); m == nil {
		t.Fatal("a viewer deleted the machine")
	}
	// Reads are allowed.
	for _, path := range []string{"/api/v1/machines", "/api/v1/machines/srv-01", "/api/v1/audit"} {
		if code, body := do(t, c, "GET", e.srv.URL+path, viewerToken, ""); code != http.StatusOK {
			t.Errorf("GET %s as viewer: %d %s", path, code, body)
		}
	}
}

// An admin is let through on every change route, and each call is
// recorded with who, from where and its result.
func TestAdminAllowedAndAudited(t *testing.T) {
	e := newAuthEnv(t, nil)
	c := e.srv.Client()
	for _, rt := range changeRoutes(t, e.h) {
		// Each route's handler runs: whatever it answers, it is not the
		// front door's 401 or 403.
		do(t, c, "POST", e.srv.URL+"/api/v1/machines", adminToken, `{"id":"srv-01"}`)
		before := len(e.trail.Entries())
		code, body := do(t, c, rt[0], e.srv.URL+rt[1], adminToken, `{"k":"v"}`)
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("%s %s as admin: %d %s", rt[0], rt[1], code, body)
		}
		got := e.trail.Entries()[before:]
		if len(got) != 1 || got[0].Who != "alice" || got[0].Via != api.ViaToken || got[0].Status != code ||
			got[0].Method != rt[0] || got[0].Path != rt[1] || !strings.HasPrefix(got[0].Remote, "127.0.0.1:") {
			t.Errorf("%s %s recorded as %+v", rt[0], rt[1], got)
		}
	}
	// The summary holds the body; reads are not recorded.
	n := len(e.trail.Entries())
	do(t, c, "POST", e.srv.URL+"/api/v1/machines/srv-01/metadata", adminToken, `{"rack": "r7"}`)
	do(t, c, "GET", e.srv.URL+"/api/v1/machines", adminToken, "")
	got := e.trail.Entries()[n:]
	if len(got) != 1 || got[0].Summary != `{"rack":"r7"}` || got[0].Machine != "srv-01" || got[0].Route != "/api/v1/machines/{id}/metadata" {
		t.Errorf("recorded %+v", got)
	}
}

// No change without its record: with the trail unwritable, a change is
// refused and nothing changes.
func TestChangeRefusedWithoutAuditRecord(t *testing.T) {
	e := newAuthEnv(t, nil)
	e.trail.Broken = true
	code, body := do(t, e.srv.Client(), "POST", e.srv.URL+"/api/v1/machines", adminToken, `{"id":"srv-02"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "audit record could not be written") {
		t.Fatalf("%d %s", code, body)
	}
	if m, _ := e.reg.Get(context.Background(), "srv-02"); m != nil {
		t.Fatal("the machine was added without an audit record")
	}
}

func TestRefusedReasonsCounted(t *testing.T) {
	e := newAuthEnv(t, nil)
	c := e.srv.Client()
	for _, tc := range []struct{ auth, reason string }{{"", refusedNoToken}, {"wrong-token-0123456789", refusedBadToken}} {
		code, _ := do(t, c, "GET", e.srv.URL+"/api/v1/machines", tc.auth, "")
		if code != http.StatusUnauthorized {
			t.Errorf("%q: %d", tc.auth, code)
		}
		if got := testutil.ToFloat64(e.h.metrics.refused.WithLabelValues(tc.reason)); got != 1 {
			t.Errorf("%s counted %v", tc.reason, got)
		}
	}
}

// With a client CA: a client without a certificate, or with one another
// CA signed, is refused even with a good token; a signed one gets in with
// its token, or with its subject's role alone.
func TestMutualTLS(t *testing.T) {
	ca := testcert.NewCA(t, "clients")
	e := newAuthEnv(t, ca)
	client := func(cert *testcert.Pair) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			// Sent whatever CAs the server names, as a client that
			// tries its luck would.
			c := cert.TLS(t)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	url := e.srv.URL + "/api/v1/machines"

	code, body := do(t, client(nil), "GET", url, adminToken, "")
	if code != http.StatusUnauthorized || !strings.Contains(body, "requires a client certificate") {
		t.Errorf("no certificate: %d %s", code, body)
	}
	other := testcert.NewCA(t, "other").Client(t, pkix.Name{CommonName: "bob", Organization: []string{"ops"}})
	code, body = do(t, client(&other), "GET", url, adminToken, "")
	if code != http.StatusUnauthorized || !strings.Contains(body, "was refused") {
		t.Errorf("certificate of another CA: %d %s", code, body)
	}
	if got := testutil.ToFloat64(e.h.metrics.refused.WithLabelValues(refusedBadCert)); got != 2 {
		t.Errorf("bad_cert counted %v", got)
	}

	dave := ca.Client(t, pkix.Name{CommonName: "dave", Organization: []string{"ops"}})
	if code, body := do(t, client(&dave), "GET", url, adminToken, ""); code != http.StatusOK {
		t.Errorf("signed certificate and token: %d %s", code, body)
	}
	if code, body := do(t, client(&dave), "GET", url, "", ""); code != http.StatusUnauthorized || !strings.Contains(body, `CN=dave,O=ops\" has no role`) {
		t.Errorf("signed certificate without a role, no token: %d %s", code, body)
	}
	// bob's subject has the role admin: his change is recorded under it.
	bob := ca.Client(t, pkix.Name{CommonName: "bob", Organization: []string{"ops"}})
	if code, body := do(t, client(&bob), "POST", url, "", `{"id":"srv-03"}`); code != http.StatusCreated {
		t.Fatalf("bob adds: %d %s", code, body)
	}
	last := e.trail.Entries()[len(e.trail.Entries())-1]
	if last.Who != "CN=bob,O=ops" || last.Via != api.ViaCertificate || last.Status != http.StatusCreated || last.Machine != "srv-03" {
		t.Errorf("bob's change recorded as %+v", last)
	}
	carol := ca.Client(t, pkix.Name{CommonName: "carol", Organization: []string{"ops"}})
	if code, _ := do(t, client(&carol), "DELETE", url+"/srv-03", "", ""); code != http.StatusForbidden {
		t.Errorf("carol (viewer) deletes: %d", code)
	}
	var l api.MachineList
	_, body = do(t, client(&carol), "GET", url, "", "")
	if json.Unmarshal([]byte(body), &l) != nil || len(l.Machines) != 1 {
		t.Errorf("carol lists: %s", body)
	}
}

// A reload that fails keeps the credentials in use and is counted; one
// that succeeds swaps them; TLS cannot be turned on by a reload.
func TestKeeperReload(t *testing.T) {
	dir := t.TempDir()
	node := config.Node{Admin: config.Admin{TokensFile: filepath.Join(dir, "tokens.yaml")}}
	testcert.WriteFile(t, node.Admin.TokensFile, []byte(tokensYAML))
	k, err := NewKeeper(func() (*Credentials, error) { return LoadCredentials(node) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.metrics = newMetrics(nil)
	has := func(tok string) bool { _, ok := k.Current().token(tok); return ok }

	testcert.WriteFile(t, node.Admin.TokensFile, []byte("tokens:\n  - {name: alice, role: admin}\n"))
	if err := k.Reload(); err == nil || !strings.Contains(err.Error(), "tokens[0] (alice).token: required") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if !has(adminToken) {
		t.Fatal("a failed reload dropped the tokens in use")
	}
	testcert.WriteFile(t, node.Admin.TokensFile, []byte("tokens:\n  - {name: alice, role: admin, token: another-token-0123456789}\n"))
	if err := k.Reload(); err != nil {
		t.Fatal(err)
	}
	if has(adminToken) || !has("another-token-0123456789") {
		t.Fatal("the reload did not swap the tokens")
	}
	ca := testcert.NewCA(t, "ca")
	node.Admin.CertFile, node.Admin.KeyFile = ca.Server(t, "mayu").Write(t, dir, "server")
	if err := k.Reload(); err == nil || !strings.Contains(err.Error(), "restart mayu") {
		t.Fatalf("TLS turned on by a reload: %v", err)
	}
	if ok, failed := testutil.ToFloat64(k.metrics.reloads.WithLabelValues("ok")), testutil.ToFloat64(k.metrics.reloads.WithLabelValues("failed")); ok != 1 || failed != 2 {
		t.Errorf("reloads counted: ok %v, failed %v", ok, failed)
	}
}
