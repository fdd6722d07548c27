// Package etcdtest starts a real, embedded, single-member etcd for a test.
//
// Every call starts a fresh etcd in its own t.TempDir() on free loopback
// ports, so tests are isolated from each other and may run in parallel. The
// server is the one mayu embeds in production (etcd.StartEmbedded), with
// fsync left on: tests exercise real etcd, not a fake. t.Cleanup closes the
// client and stops the server.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
)

// Server is a running embedded etcd and a client connected to it.
type Server struct {
	Etcd      *embed.Etcd
	Client    *clientv3.Client
	ClientURL string

	stopOnce sync.Once
}

// Stop stops the etcd server; the client stays open, so a test can watch
// its code meet an outage. Stop may be called more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(s.Etcd.Close)
}

// Start starts a fresh embedded etcd and returns a client connected to it.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	return StartServer(t).Client
}

// StartServer is Start for tests that also need the server, to stop it.
func StartServer(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	var srv *embed.Etcd
	var clientURL string
	var err error
	// A port picked by listening on :0 can be taken by someone else before
	// etcd binds it; try again with new ports if that happens.
	for attempt := 0; attempt < 5; attempt++ {
		peerURL := "http://" + freeAddr(t)
		clientURL = "http://" + freeAddr(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		srv, err = etcd.StartEmbedded(ctx, filepath.Join(dir, fmt.Sprint("etcd", attempt)), "etcdtest", config.Embedded{
			ClientURL:           clientURL,
			PeerURL:             peerURL,
			QuotaBytes:          256 << 20,
			CompactionRetention: time.Hour,
		}, etcd.WithLogger(zap.NewNop()))
		cancel()
		if err == nil || !addrInUse(err) {
			break
		}
	}
	if err != nil {
		t.Fatalf("etcdtest: start embedded etcd: %v", err)
	}
	s := &Server{Etcd: srv, ClientURL: clientURL}
	t.Cleanup(s.Stop)

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{clientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client for %s: %v", clientURL, err)
	}
	// Registered after s.Stop, so it runs first: client, then server.
	t.Cleanup(func() { cli.Close() })
	s.Client = cli
	return s
}

// Prefix is the key prefix tests put mayu's keys under.
func Prefix(t testing.TB) string {
	return "/mayu-test/"
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	// Below Linux's ephemeral range (32768 and up by default): a port
	// the kernel handed out for "127.0.0.1:0" could go to an outgoing
	// connection before etcd binds it ("bind: address already in use",
	// seen in CI); these are never given out so.
	for try := 0; try < 200; try++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err == nil {
			defer l.Close()
			return l.Addr().String()
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: pick a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}
