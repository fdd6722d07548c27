package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// TestEtcdTLSWithAuth runs two mayu replicas on a real 3-member etcd that
// serves TLS only, requires client certificates and has auth on, as a
// user whose role may read and write /mayu/ and nothing else (the setup
// docs/etcd.md describes). Registration, an install, the election, fenced
// DHCP lease writes and a failover all work; a replica with a certificate
// etcd does not trust, or a user outside the role, stops at once and says
// why.
func TestEtcdTLSWithAuth(t *testing.T) {
	netlab.Require(t, "busybox", "curl")
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.250/24", "dev", "cli0")
	inSrv := func(name string, args ...string) *exec.Cmd {
		return lab.Command(context.Background(), lab.Srv, name, args...)
	}
	ec := etcdtest.StartCluster(t, etcdtest.ClusterOptions{TLS: true, BasePort: 12379, Exec: inSrv})
	ec.EnableAuth("mayu", "mayu", "mayu-etcd-secret", "/mayu/")
	ec.AddUser("other", "outsider", "outsider-secret", "/other/")
	cert := ec.CA.Client(t, "mayu")

	etcdKeys := func(user, password string, kp etcdtest.KeyPair) map[string]string {
		pw := filepath.Join(t.TempDir(), "etcd-password")
		writeFile(t, pw, []byte(password+"\n"))
		return map[string]string{"ca_file": ec.CA.File, "cert_file": kp.Cert, "key_file": kp.Key,
			"username": user, "password_file": pw}
	}
	config := func(name string, ports fixture.Ports, keys map[string]string) string {
		dir := t.TempDir()
		if err := fixture.WriteFiles(dir, fixture.Files{IPXE: true, Token: "e2e-admin-token-0123456789"}); err != nil {
			t.Fatal(err)
		}
		path, err := fixture.Config{Dir: dir, Name: name, Interface: "srv0", Etcd: ec.Endpoints, EtcdKeys: keys,
			ElectionTTL: "3s", LeaseTime: "10m", Ports: ports}.Write()
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	start := func(name string, ports fixture.Ports) *replica {
		r := &replica{lab: lab, ns: lab.Srv, config: config(name, ports, etcdKeys("mayu", "mayu-etcd-secret", cert))}
		r.cmd, r.log = lab.Start(lab.Srv, bins.mayu, "-config", r.config, "-log-level", "debug")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("mayu %s log:\n%s", name, tail(r.log.String(), 40))
			}
		})
		r.waitLog(t, "mayu started", 30*time.Second)
		return r
	}
	// Both replicas on the one segment: DHCP sockets share port 67, the
	// second's TCP ports are moved and it serves no TFTP.
	r1 := start("r1", fixture.StandardPorts)
	r2 := start("r2", fixture.Ports{DHCP: 67, HTTP: 4181, Admin: 4180, Metrics: 4182})
	leader := func(within time.Duration) (*replica, string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			for _, c := range []struct {
				r    *replica
				name string
				port int
			}{{r1, "r1", 4082}, {r2, "r2", 4182}} {
				if c.r.cmd.ProcessState != nil {
					continue
				}
				out, err := lab.Run(5*time.Second, lab.Srv, "curl", "-sf", "--max-time", "2", fmt.Sprintf("http://127.0.0.1:%d/leader", c.port))
				if err == nil && strings.HasPrefix(out, "leader") {
					return c.r, c.name
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("no replica leads DHCP")
		return nil, ""
	}
	lead, leadName := leader(30 * time.Second)
	for _, port := range []int{4082, 4182} {
		if out, err := lab.Run(5*time.Second, lab.Srv, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/readyz", port)); err != nil {
			t.Fatalf("/readyz on %d: %v %s", port, err, out)
		}
	}

	// Registration and an install: records, the cluster secret, tokens.
	installMachine(t, lab, "TLS-SN-0001", "52:54:00:7e:00:01")
	rec := ec.MustEtcdctl("get", "/mayu/machines/tls-sn-0001", "--print-value-only")
	if !strings.Contains(rec, `"state":"installed"`) {
		t.Fatalf("record in etcd: %s", rec)
	}

	// A DHCP lease, written by the leader in its fenced transaction.
	dhcpLease := func(mac, wantLeader string) {
		t.Helper()
		env := udhcpc(t, lab, mac, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
		if env == nil || !inPool(env["ip"]) {
			t.Fatalf("no lease for %s: %v", mac, env)
		}
		got := ec.MustEtcdctl("get", "/mayu/leases/"+env["ip"], "--print-value-only")
		if !strings.Contains(got, mac) || !strings.Contains(got, `"leader":"`+wantLeader+`"`) {
			t.Fatalf("lease %s in etcd: %q, want %s granted by %s", env["ip"], got, mac, wantLeader)
		}
	}
	dhcpLease("52:54:00:7e:01:01", leadName)

	// A graceful stop: the other replica takes over and writes leases.
	lead.cmd.Process.Signal(syscall.SIGTERM)
	lead.cmd.Wait()
	_, next := leader(15 * time.Second)
	if next == leadName {
		t.Fatalf("%s still leads after it stopped", next)
	}
	dhcpLease("52:54:00:7e:01:02", next)

	// Wrong credentials: mayu stops at once and says why.
	stranger := etcdtest.NewCA(t, "stranger").Client(t, "mayu")
	for _, tt := range []struct {
		name string
		keys map[string]string
		want string
	}{
		{"certificate of another CA", etcdKeys("mayu", "mayu-etcd-secret", stranger), "refused mayu's client certificate"},
		{"no certificate", func() map[string]string {
			k := etcdKeys("mayu", "mayu-etcd-secret", cert)
			delete(k, "cert_file")
			delete(k, "key_file")
			return k
		}(), "etcd asks for a client certificate: set node.etcd.cert_file"},
		{"user outside the role", etcdKeys("outsider", "outsider-secret", cert), `outsider\" may not read or write /mayu/`},
		{"wrong password", etcdKeys("mayu", "guess", cert), `etcdserver: authentication failed, invalid user ID or password (check node.etcd.username`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := config("bad", fixture.Ports{HTTP: 4281, Admin: 4280, Metrics: 4282}, tt.keys)
			begin := time.Now()
			out, err := lab.Run(30*time.Second, lab.Srv, bins.mayu, "-config", path)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %v, want output containing %q:\n%s", err, tt.want, out)
			}
			if d := time.Since(begin); d > 15*time.Second {
				t.Errorf("took %s to stop", d.Round(time.Millisecond))
			}
		})
	}
}

// TestEmbeddedEtcdTLS runs mayu on its embedded etcd serving TLS with
// client certificates required: mayu reaches it over TLS, etcdctl with a
// certificate of the CA sees mayu's keys, and one without is refused.
func TestEmbeddedEtcdTLS(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "process-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := etcdtest.NewCA(t, "mayu-etcd")
	srv, cl := ca.Server(t, "embedded", "127.0.0.1"), ca.Client(t, "mayu")
	c.Name = "emb"
	c.EmbeddedClientURL = strings.Replace(c.EmbeddedClientURL, "http://", "https://", 1)
	c.EmbeddedKeys = map[string]string{"cert_file": srv.Cert, "key_file": srv.Key, "client_ca_file": ca.File}
	c.EtcdKeys = map[string]string{"ca_file": ca.File, "cert_file": cl.Cert, "key_file": cl.Key}
	path, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bins.mayu, "-check", "-config", path).CombinedOutput(); err != nil {
		t.Fatalf("-check: %v\n%s", err, out)
	}
	// -check reads the files, as a start would.
	bad := c
	bad.Dir = t.TempDir()
	bad.EtcdKeys = map[string]string{"ca_file": ca.File, "cert_file": filepath.Join(bad.Dir, "missing.pem"), "key_file": cl.Key}
	if err := fixture.WriteFiles(bad.Dir, fixture.Files{Token: "process-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	badPath, err := bad.Write()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bins.mayu, "-check", "-config", badPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "node.etcd.cert_file: open "+filepath.Join(bad.Dir, "missing.pem")) {
		t.Fatalf("-check with a missing certificate: %v\n%s", err, out)
	}
	cmd := exec.Command(bins.mayu, "-config", path)
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("mayu log:\n%s", log.String())
		}
	})
	etcdctl := func(args ...string) (string, error) {
		out, err := exec.Command(bins.etcdctl, append([]string{"--endpoints", c.EmbeddedClientURL, "--dial-timeout", "3s", "--command-timeout", "5s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for {
		out, err = etcdctl("--cacert", ca.File, "--cert", cl.Cert, "--key", cl.Key, "get", "--prefix", "--keys-only", "/mayu/")
		if err == nil && strings.Contains(out, "/mayu/cluster/secret") && strings.Contains(out, "/mayu/replicas/emb") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mayu's keys never showed in its embedded etcd: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := etcdctl("--cacert", ca.File, "get", "/mayu/cluster/secret"); err == nil {
		t.Fatalf("etcdctl without a client certificate read the cluster secret:\n%s", out)
	}
	if out, err := etcdctl("get", "/mayu/cluster/secret"); err == nil {
		t.Fatalf("etcdctl over http:// read the cluster secret:\n%s", out)
	}
}
