package etcd_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
	"github.com/mayu-boot/mayu/pkg/state"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func passwordFile(t *testing.T, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func node(e config.Etcd) config.Node {
	e.Prefix = "/mayu/"
	e.DialTimeout, e.RequestTimeout = 3*time.Second, 3*time.Second
	return config.Node{Name: "t", Etcd: e}
}

// open is etcd.Open bounded in time: a refusal must come back as an
// error, not as a hang.
func open(t *testing.T, n config.Node) (*etcd.Conn, error) {
	t.Helper()
	start := time.Now()
	conn, err := etcd.Open(context.Background(), n, quiet, nil)
	if d := time.Since(start); d > 2*n.Etcd.DialTimeout+3*time.Second {
		t.Errorf("Open took %s", d.Round(time.Millisecond))
	}
	return conn, err
}

// TestOpenTLSAuth runs mayu's etcd client against a real 3-member etcd
// with TLS, --client-cert-auth and auth enabled, as a user whose role
// covers only mayu's prefix: it does all that a replica does, and every
// wrong credential is refused with an error that says which.
func TestOpenTLSAuth(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{TLS: true})
	c.EnableAuth("mayu", "mayu", "mayu-secret", "/mayu/")
	c.AddUser("other", "outsider", "outsider-secret", "/other/")
	mayuCert := c.CA.Client(t, "mayu")
	stranger := etcdtest.NewCA(t, "stranger")
	strangerCert := stranger.Client(t, "mayu")
	good := config.Etcd{Endpoints: c.Endpoints, CAFile: c.CA.File, CertFile: mayuCert.Cert, KeyFile: mayuCert.Key,
		Username: "mayu", PasswordFile: passwordFile(t, "mayu-secret")}

	t.Run("a user limited to the prefix does what a replica does", func(t *testing.T) {
		conn, err := open(t, node(good))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cli := conn.Client
		if _, err := cli.Put(ctx, "/mayu/k", "v"); err != nil {
			t.Fatal(err)
		}
		// A session lease, an election under the prefix, a fenced write,
		// a watch, revoking the lease: election, lease and replica.
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(3))
		if err != nil {
			t.Fatal(err)
		}
		el := concurrency.NewElection(sess, "/mayu/election")
		if err := el.Campaign(ctx, "t"); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())).
			Then(clientv3.OpPut("/mayu/leases/10.0.0.1", "{}")).Commit()
		if err != nil || !resp.Succeeded {
			t.Fatalf("fenced write: %v %v", resp, err)
		}
		// The watch as a replica's Follower runs it. Its first attempt may
		// be refused ("invalid auth token"): etcd applies the client's
		// simple token on each member through raft, and the member the
		// watch stream went to may not have applied it yet; unlike a
		// unary call, a stream is not retried by etcd's client. The
		// Follower tries again, from the revision it read.
		watched, ready := make(chan *clientv3.Event, 1), make(chan struct{})
		var once sync.Once
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go state.Follower{Key: "/mayu/machines/", Prefix: true, Pause: 100 * time.Millisecond,
			Change:   func(ev *clientv3.Event) { watched <- ev },
			Progress: func(int64) { once.Do(func() { close(ready) }) },
			Broken:   func(err error) { t.Logf("watch broke, set up again: %v", err) },
		}.Run(wctx, cli)
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal("the watch never read where to start")
		}
		if _, err := cli.Put(ctx, "/mayu/machines/a", "{}"); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-watched:
			if string(ev.Kv.Key) != "/mayu/machines/a" {
				t.Fatalf("watch: %s", ev.Kv.Key)
			}
		case <-ctx.Done():
			t.Fatal("the watch saw no change")
		}
		stopWatch()
		if err := el.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Revoke(ctx, sess.Lease()); err != nil {
			t.Fatal(err)
		}
		// And nothing outside the prefix.
		if _, err := cli.Put(ctx, "/other/k", "v"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("write outside the prefix: %v", err)
		}
	})

	t.Run("the certificate's CN names the user", func(t *testing.T) {
		e := good
		e.Username, e.PasswordFile = "", ""
		conn, err := open(t, node(e))
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})

	for _, tt := range []struct {
		name   string
		change func(e *config.Etcd)
		want   string
	}{
		{"no client certificate", func(e *config.Etcd) { e.CertFile, e.KeyFile = "", "" },
			"etcd asks for a client certificate: set node.etcd.cert_file and node.etcd.key_file"},
		{"a client certificate of another CA", func(e *config.Etcd) { e.CertFile, e.KeyFile = strangerCert.Cert, strangerCert.Key },
			"refused mayu's client certificate " + strangerCert.Cert},
		{"a server certificate mayu does not trust", func(e *config.Etcd) { e.CAFile = stranger.File },
			"etcd's server certificate is not trusted"},
		{"a wrong password", func(e *config.Etcd) { e.PasswordFile = passwordFile(t, "guess") },
			`refused user "mayu"`},
		{"a user outside the role", func(e *config.Etcd) { e.Username, e.PasswordFile = "outsider", passwordFile(t, "outsider-secret") },
			`user "outsider" may not read or write /mayu/`},
		{"a CN that is no user", func(e *config.Etcd) {
			kp := c.CA.Client(t, "nobody")
			e.CertFile, e.KeyFile, e.Username, e.PasswordFile = kp.Cert, kp.Key, "", ""
		}, `user "nobody" (the CN of node.etcd.cert_file) may not read or write /mayu/`},
		{"http:// to a TLS etcd", func(e *config.Etcd) {
			for i, ep := range e.Endpoints {
				e.Endpoints[i] = "http" + strings.TrimPrefix(ep, "https")
			}
			e.CAFile, e.CertFile, e.KeyFile = "", "", ""
		}, "serves TLS: use https://"},
		{"an unreadable password file", func(e *config.Etcd) { e.PasswordFile = "/nonexistent/etcd-password" },
			"node.etcd.password_file: open /nonexistent/etcd-password: no such file or directory"},
		{"a key that is not the certificate's", func(e *config.Etcd) { e.KeyFile = strangerCert.Key },
			"node.etcd.cert_file " + mayuCert.Cert + ", node.etcd.key_file " + strangerCert.Key + ": tls: private key does not match public key"},
		{"a CA file without a certificate", func(e *config.Etcd) { e.CAFile = mayuCert.Key },
			"node.etcd.ca_file: " + mayuCert.Key + " holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := good
			e.Endpoints = append([]string(nil), good.Endpoints...)
			tt.change(&e)
			conn, err := open(t, node(e))
			if err == nil {
				conn.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v\nwant it to contain %q", err, tt.want)
			}
			t.Log(err)
		})
	}
}

// TestEmbeddedTLS starts the embedded etcd serving TLS with client
// certificates required; mayu's own client reaches it over TLS, and a
// client without a certificate is refused.
func TestEmbeddedTLS(t *testing.T) {
	ca := etcdtest.NewCA(t, "mayu-etcd")
	srv := ca.Server(t, "embedded", "127.0.0.1")
	cl := ca.Client(t, "mayu")
	clientURL, peerURL := "https://"+freeAddr(t), "https://"+freeAddr(t)
	e := config.Etcd{CAFile: ca.File, CertFile: cl.Cert, KeyFile: cl.Key, Embedded: config.Embedded{
		ClientURL: clientURL, PeerURL: peerURL, QuotaBytes: 64 << 20, CompactionRetention: time.Hour,
		CertFile: srv.Cert, KeyFile: srv.Key, ClientCAFile: ca.File,
	}}
	n := node(e)
	n.DataDir = t.TempDir()
	if err := etcd.Check(n.Etcd); err != nil {
		t.Fatalf("Check: %v", err)
	}
	conn, err := open(t, n)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Client.Put(ctx, "/mayu/k", "v"); err != nil {
		t.Fatal(err)
	}

	// Others reach it as clients of an external etcd.
	other := config.Etcd{Endpoints: []string{clientURL}, CAFile: ca.File}
	if c, err := open(t, node(other)); err == nil || !strings.Contains(err.Error(), "set node.etcd.cert_file") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a client without a certificate: %v", err)
	}
	other.CertFile, other.KeyFile = cl.Cert, cl.Key
	c, err := open(t, node(other))
	if err != nil {
		t.Fatalf("a client with a certificate: %v", err)
	}
	defer c.Close()
	if resp, err := c.Client.Get(ctx, "/mayu/k"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get: %v %v", resp, err)
	}
}

// TestCheck names the key whose file is at fault.
func TestCheck(t *testing.T) {
	ca := etcdtest.NewCA(t, "c")
	kp := ca.Server(t, "s", "127.0.0.1")
	for _, tt := range []struct {
		e    config.Etcd
		want string
	}{
		{config.Etcd{Embedded: config.Embedded{ClientURL: "https://127.0.0.1:2379", CertFile: "/nonexistent.pem", KeyFile: kp.Key}},
			"node.etcd.embedded.cert_file: open /nonexistent.pem"},
		{config.Etcd{Embedded: config.Embedded{ClientURL: "https://127.0.0.1:2379", CertFile: kp.Cert, KeyFile: "/nonexistent-key.pem"}},
			"node.etcd.embedded.key_file: open /nonexistent-key.pem"},
		{config.Etcd{Embedded: config.Embedded{ClientURL: "https://127.0.0.1:2379", CertFile: kp.Cert, KeyFile: kp.Key, ClientCAFile: kp.Key}},
			"node.etcd.embedded.client_ca_file: " + kp.Key + " holds no PEM certificate"},
		{config.Etcd{Endpoints: []string{"https://10.0.0.1:2379"}, CAFile: "/nonexistent-ca.pem"},
			"node.etcd.ca_file: open /nonexistent-ca.pem"},
		{config.Etcd{Endpoints: []string{"https://10.0.0.1:2379"}, CAFile: ca.File, CertFile: "/nonexistent.pem", KeyFile: kp.Key},
			"node.etcd.cert_file: open /nonexistent.pem"},
		{config.Etcd{Endpoints: []string{"http://10.0.0.1:2379"}, Username: "mayu", PasswordFile: passwordFile(t, "")},
			"node.etcd.password_file: "},
	} {
		err := etcd.Check(tt.e)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check: %v, want %q", err, tt.want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestOpenWrongServerName: a server certificate that does not name the
// address mayu dials is reported as such, not as a timeout.
func TestOpenWrongServerName(t *testing.T) {
	ca := etcdtest.NewCA(t, "c")
	kp := ca.Server(t, "elsewhere", "10.0.0.1")
	cert, err := tls.LoadX509KeyPair(kp.Cert, kp.Key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	_, err = open(t, node(config.Etcd{Endpoints: []string{"https://" + l.Addr().String()}, CAFile: ca.File}))
	if err == nil || !strings.Contains(err.Error(), "etcd's server certificate is not for this address") {
		t.Fatalf("Open: %v", err)
	}
}
