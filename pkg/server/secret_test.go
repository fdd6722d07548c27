package server

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/replica"
)

// Two replicas on one etcd: a rotation of the cluster secret on one
// reaches the other at once (it follows the key; it used to read it once
// at start and refuse every token of the new secret), and the previous
// secret still opens installs in flight on both.
func TestEveryReplicaFollowsTheSecret(t *testing.T) {
	etcd := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var http1, http2, admin1 string
	for i, name := range []string{"r1", "r2"} {
		cfg := replicaConfig(t, "")
		cfg.Node.Name = name
		cfg.Node.Etcd.Endpoints = []string{etcd.ClientURL}
		cfg.Node.Etcd.Prefix = prefix
		s, err := Start(context.Background(), cfg, log, "test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if i == 0 {
			http1, admin1 = "http://"+s.Addrs["http"], "http://"+s.Addrs["admin"]
		} else {
			http2 = "http://" + s.Addrs["http"]
		}
	}
	tokenRe := regexp.MustCompile(`mayu\.token=([0-9a-f]{64})`)
	script := func() string {
		t.Helper()
		_, body := get(t, http1+"/ipxe?serial="+hex.EncodeToString([]byte("SN-ROT"))+"&mac=52:54:00:00:07:01")
		m := tokenRe.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no installer script:\n%s", body)
		}
		return m[1]
	}
	before := script()
	if code, body := get(t, http2+"/machines/sn-rot/first-stage?token="+before); code != 200 {
		t.Fatalf("first stage on r2 before the rotation: %d %s", code, body)
	}

	req, _ := http.NewRequest("POST", admin1+"/api/v1/secret/rotate", nil)
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("rotate: %v %v", resp, err)
	}
	resp.Body.Close()
	after := script()
	if after == before {
		t.Fatal("r1 still hands out tokens of the old secret")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, http2+"/machines/sn-rot/first-stage?token="+after)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r2 refuses the token r1 handed out after the rotation: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The install that began before the rotation goes on, on either.
	for _, base := range []string{http1, http2} {
		if code, body := get(t, base+"/machines/sn-rot/final-config?token="+before); code != 200 {
			t.Fatalf("%s: the previous secret's token: %d %s", base, code, body)
		}
	}
}

// etcd written by a newer mayu stops this one at start, saying why, and
// stays as it is.
func TestStartRefusesANewerSchema(t *testing.T) {
	etcd := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	if _, err := etcd.Client.Put(context.Background(), prefix+"schema", `{"version":99}`); err != nil {
		t.Fatal(err)
	}
	cfg := replicaConfig(t, "")
	cfg.Node.Etcd.Endpoints = []string{etcd.ClientURL}
	cfg.Node.Etcd.Prefix = prefix
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err == nil {
		s.Close()
		t.Fatal("started on a newer schema")
	}
	if !strings.Contains(err.Error(), prefix+"schema is 99") || !strings.Contains(err.Error(), "newer mayu") {
		t.Fatalf("error %q", err)
	}
}

// A replica of an older schema still announced (one of the previous
// release, which would drop tokenNonce from every record it writes) stops
// the start with what to do, once its announcement outlived the time a
// killed replica's may linger; one that goes meanwhile does not, nor does
// this replica's own stale announcement or an unreadable one.
func TestStartRefusesBesideAnOlderReplica(t *testing.T) {
	etcd := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	cfg := replicaConfig(t, "")
	cfg.Node.Etcd.Endpoints = []string{etcd.ClientURL}
	cfg.Node.Etcd.Prefix = prefix
	ctx := context.Background()
	put := func(name, value string) {
		t.Helper()
		if _, err := etcd.Client.Put(ctx, prefix+"replicas/"+name, value); err != nil {
			t.Fatal(err)
		}
	}
	start := func() (*Server, error) {
		return Start(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	}
	put(cfg.Node.Name, `{"name":"`+cfg.Node.Name+`","version":"v0.1.0"}`)
	put("garbled", `{not json`)
	put("killed", `{"name":"killed","version":"v0.1.0"}`)
	go func() {
		time.Sleep(2 * time.Second) // its lease runs out
		etcd.Client.Delete(ctx, prefix+"replicas/killed")
	}()
	s, err := start()
	if err != nil {
		t.Fatalf("a stale own announcement, an unreadable one or a replica that went stopped the start: %v", err)
	}
	s.Close()

	put("old-1", `{"name":"old-1","version":"v0.1.0"}`)
	began := time.Now()
	s, err = start()
	if err == nil {
		s.Close()
		t.Fatal("started beside a replica of the older schema")
	}
	if !strings.Contains(err.Error(), "replica old-1 (mayu v0.1.0) runs an older etcd schema") || !strings.Contains(err.Error(), "stop every replica of the older release") {
		t.Fatalf("error %q", err)
	}
	if waited := time.Since(began); waited < replica.AnnounceTTL {
		t.Errorf("refused after %s, before a killed replica's announcement could have gone", waited)
	}
}
