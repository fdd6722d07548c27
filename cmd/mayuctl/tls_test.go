package main

import (
	"context"
	"crypto/x509/pkix"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/testcert"
	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/audit"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// mayuctl over HTTPS with a client certificate, end to end on a real etcd:
// a change is made, shown by `mayuctl audit` under the token's name, and
// stored text is printed escaped.
func TestOverHTTPSWithClientCertificate(t *testing.T) {
	for _, v := range []string{"MAYU_SERVER", "MAYU_TOKEN", "MAYU_TOKEN_FILE", "MAYU_CACERT", "MAYU_CERT", "MAYU_KEY"} {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	ca := testcert.NewCA(t, "mayu test CA")
	node := config.Node{Name: "replica-a", Admin: config.Admin{TokensFile: filepath.Join(dir, "tokens.yaml")}}
	node.Admin.CertFile, node.Admin.KeyFile = ca.Server(t, "mayu-admin").Write(t, dir, "server")
	node.Admin.ClientCAFile = ca.Write(t, dir, "ca")
	testcert.WriteFile(t, node.Admin.TokensFile, []byte("tokens:\n  - {name: ops-alice, role: admin, token: alice-token-0123456789}\n"+
		"certificates:\n  - {subject: \"CN=robot,O=ci\", role: admin}\n"))
	keeper, err := admin.NewKeeper(func() (*admin.Credentials, error) { return admin.LoadCredentials(node) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cluster := config.Cluster{Static: config.Static{Subnet: netip.MustParsePrefix("10.0.1.0/24"),
		Range: config.Range{Start: netip.MustParseAddr("10.0.1.10"), End: netip.MustParseAddr("10.0.1.20")}}}
	etc := etcdtest.Start(t)
	reg := registry.New(etc, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cluster, Replica: node.Name})
	trail := audit.New(etc, audit.Options{Prefix: etcdtest.Prefix(t), Replica: node.Name, MaxEntries: 1000})
	srv := httptest.NewUnstartedServer(admin.New(admin.Options{Machines: reg, Config: &config.Config{Node: node, Cluster: cluster},
		Credentials: keeper, Audit: trail}))
	srv.TLS = keeper.TLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)

	alice := ca.Client(t, pkix.Name{CommonName: "alice", Organization: []string{"ops"}})
	aliceCert, aliceKey := alice.Write(t, dir, "alice")
	tokenFile := filepath.Join(dir, "alice.token")
	testcert.WriteFile(t, tokenFile, []byte("alice-token-0123456789\n"))
	caFile := filepath.Join(dir, "ca.crt")
	tlsArgs := []string{"--server", srv.URL, "--cacert", caFile, "--cert", aliceCert, "--key", aliceKey, "--token-file", tokenFile}
	must := func(args ...string) string {
		t.Helper()
		code, out, errOut := runArgs(append(tlsArgs, args...)...)
		if code != 0 {
			t.Fatalf("mayuctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	must("add", "srv-01")
	must("reinstall", "srv-01")

	// Without the client certificate: refused, saying what is missing.
	code, _, errOut := runArgs("--server", srv.URL, "--cacert", caFile, "--token-file", tokenFile, "list")
	if code != 1 || !strings.Contains(errOut, "requires a client certificate") {
		t.Errorf("without --cert: exit %d: %s", code, errOut)
	}
	// Without --cacert the server's certificate is not trusted.
	code, _, errOut = runArgs("--server", srv.URL, "--token-file", tokenFile, "list")
	if code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("without --cacert: exit %d: %s", code, errOut)
	}
	// --cert over http:// is a mistake.
	if code, _, errOut := runArgs("--server", "http://127.0.0.1:1", "--cert", aliceCert, "--key", aliceKey, "list"); code != 1 || !strings.Contains(errOut, "use https://") {
		t.Errorf("--cert with http://: exit %d: %s", code, errOut)
	}
	if code, _, _ := runArgs("--server", srv.URL, "--cert", aliceCert, "list"); code != 2 {
		t.Errorf("--cert without --key: exit %d", code)
	}

	// A certificate whose subject has a role needs no token; the
	// environment variables work as the flags do.
	robot := ca.Client(t, pkix.Name{CommonName: "robot", Organization: []string{"ci"}})
	robotCert, robotKey := robot.Write(t, dir, "robot")
	t.Setenv("MAYU_SERVER", srv.URL)
	t.Setenv("MAYU_CACERT", caFile)
	t.Setenv("MAYU_CERT", robotCert)
	t.Setenv("MAYU_KEY", robotKey)
	t.Setenv("MAYU_TOKEN_FILE", "")
	if code, out, errOut := runArgs("delete", "srv-01", "--token-file", filepath.Join(dir, "none")); code != 1 {
		t.Errorf("an unreadable explicit token file must still fail: exit %d %s%s", code, out, errOut)
	}
	code, out, errOut := runArgs("delete", "srv-01")
	if code != 0 {
		t.Fatalf("delete as robot: exit %d %s%s", code, out, errOut)
	}

	// Stored text with a terminal escape (a raw request body) is printed
	// escaped.
	if _, err := trail.Begin(context.Background(), api.AuditEntry{Who: "x", Method: "POST", Machine: "srv-01", Summary: "raw \x1b[31m body"}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut = runArgs("audit", "--machine", "srv-01", "-o", "wide")
	if code != 0 {
		t.Fatalf("audit: exit %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("audit of srv-01:\n%s", out)
	}
	for i, want := range []string{`"raw \x1b[31m body"`, "CN=robot,O=ci", "ops-alice", "ops-alice"} {
		if !strings.Contains(lines[i+1], want) {
			t.Errorf("line %d %q lacks %q", i+1, lines[i+1], want)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("a raw escape was printed")
	}
	if !strings.Contains(lines[2], "DELETE") || !strings.Contains(lines[2], "200") || !strings.Contains(lines[4], "201") {
		t.Errorf("audit:\n%s", out)
	}
	if code, out, _ := runArgs("audit", "--limit", "1"); code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
		t.Errorf("--limit 1: %s", out)
	}
}
