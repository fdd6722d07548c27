package e2e

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/testcert"
)

const (
	oldToken    = "old-admin-token-0123456789"
	newToken    = "new-admin-token-0123456789"
	viewerToken = "viewer-token-0123456789"
)

func tokensFile(adminToken string) []byte {
	return []byte(fmt.Sprintf("tokens:\n  - {name: alice, role: admin, token: %s}\n  - {name: grafana, role: viewer, token: %s}\n",
		adminToken, viewerToken))
}

// The real mayu serves its admin API over mutual TLS; SIGHUP reloads the
// tokens file and the certificate without a restart: the new token works
// and the old one no longer does, new connections get the new
// certificate, and a reload of a broken file keeps what was in use.
// mayuctl (the binary) reads the audit trail over HTTPS.
func TestAdminTLSAndReloadOnSIGHUP(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{}); err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t, "mayu e2e CA")
	certFile, keyFile := ca.Server(t, "admin-1").Write(t, dir, "admin")
	caFile := ca.Write(t, dir, "ca")
	tokens := filepath.Join(dir, "admin-tokens.yaml")
	testcert.WriteFile(t, tokens, tokensFile(oldToken))
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.Name = "tls"
	c.Admin = fmt.Sprintf("    tokens_file: %q\n    cert_file: %q\n    key_file: %q\n    client_ca_file: %q\n", tokens, certFile, keyFile, caFile)
	config, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.mayu, "-config", config)
	log := &netlab.Output{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitFor := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(log.String(), what) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, tail(log.String(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("mayu started", 1)
	base := "https://127.0.0.1:" + fmt.Sprint(c.Ports.Admin)

	alice := ca.Client(t, pkix.Name{CommonName: "alice", Organization: []string{"ops"}})
	aliceCert, aliceKey := alice.Write(t, dir, "alice")
	// Each call on a new connection, so that it sees the certificate the
	// replica serves now.
	call := func(method, path, token string, withCert bool) (int, string, string) {
		t.Helper()
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if withCert {
			cfg.Certificates = []tls.Certificate{alice.TLS(t)}
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 10 * time.Second}
		req, _ := http.NewRequest(method, base+path, strings.NewReader(`{"id":"srv-01"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if code, body, _ := call("GET", "/api/v1/machines", oldToken, false); code != http.StatusUnauthorized || !strings.Contains(body, "client certificate") {
		t.Errorf("without a client certificate: %d %s", code, body)
	}
	if code, body, cn := call("POST", "/api/v1/machines", oldToken, true); code != http.StatusCreated || cn != "admin-1" {
		t.Fatalf("add with the old token: %d %s (certificate %s)", code, body, cn)
	}
	if code, _, _ := call("DELETE", "/api/v1/machines/srv-01", viewerToken, true); code != http.StatusForbidden {
		t.Errorf("viewer deletes: %d", code)
	}

	// New token, new certificate; SIGHUP.
	ca.Server(t, "admin-2").Write(t, dir, "admin")
	testcert.WriteFile(t, tokens, tokensFile(newToken))
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("admin credentials reloaded", 1)
	if code, _, _ := call("GET", "/api/v1/machines", oldToken, true); code != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: %d", code)
	}
	code, body, cn := call("DELETE", "/api/v1/machines/srv-01", newToken, true)
	if code != http.StatusOK || cn != "admin-2" {
		t.Errorf("the new token after the reload: %d %s (certificate %s)", code, body, cn)
	}

	// A broken tokens file: the reload fails, the credentials in use stay.
	testcert.WriteFile(t, tokens, []byte("tokens:\n  - {name: alice, role: superuser, token: "+oldToken+"}\n"))
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("admin credentials not reloaded", 1)
	if strings.Contains(log.String(), oldToken) || strings.Contains(log.String(), newToken) {
		t.Error("a token is in the log")
	}
	if code, _, _ := call("GET", "/api/v1/machines", newToken, true); code != http.StatusOK {
		t.Errorf("after a failed reload: %d", code)
	}
	resp, err := http.Get("http://127.0.0.1:" + fmt.Sprint(c.Ports.Metrics) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mayu_admin_credential_reloads_total{result="failed"} 1`, `mayu_admin_credential_reloads_total{result="ok"} 1`,
		`mayu_admin_refused_total{reason="bad_cert"} 1`, `mayu_admin_refused_total{reason="wrong_role"} 1`, `mayu_admin_refused_total{reason="bad_token"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// mayuctl, the binary, over HTTPS with its client certificate.
	mayuctl := exec.Command(filepath.Join(bins.dir, "mayuctl"), "audit", "--machine", "srv-01")
	mayuctl.Env = append(os.Environ(), "MAYU_SERVER="+base, "MAYU_TOKEN="+newToken, "MAYU_CACERT="+caFile,
		"MAYU_CERT="+aliceCert, "MAYU_KEY="+aliceKey)
	out, err := mayuctl.CombinedOutput()
	if err != nil {
		t.Fatalf("mayuctl audit: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// The viewer's refused DELETE is not there: refusals are logged and
	// counted (wrong_role above), not recorded.
	if len(lines) != 3 || !strings.Contains(lines[1], "DELETE") || !strings.Contains(lines[1], "200") ||
		!strings.Contains(lines[2], "POST") || !strings.Contains(lines[2], "201") || strings.Contains(string(out), "grafana") {
		t.Errorf("mayuctl audit:\n%s", out)
	}
	for _, l := range lines[1:] {
		if !strings.Contains(l, "127.0.0.1:") {
			t.Errorf("no remote address: %s", l)
		}
	}
}
