// Package etcd connects mayu to the etcd that holds all its state: an
// external cluster when endpoints are configured, else a single-member etcd
// embedded in the data directory (one machine, one command).
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/mayu-boot/mayu/pkg/config"
)

// Conn is an etcd client and, when embedded, the server behind it.
type Conn struct {
	Client *clientv3.Client
	server *embed.Etcd

	stopMembers func() // ends followMembers; nil with one endpoint
	stopOutage  func() // ends watchOutage

	serverStopping *atomic.Bool // set before closing server: see slogCore
}

// Open connects to the configured etcd, starting the embedded one first if
// no endpoints are set. The client's request metrics go to reg (nil:
// nowhere).
func Open(ctx context.Context, node config.Node, log *slog.Logger, reg prometheus.Registerer) (*Conn, error) {
	c := &Conn{}
	creds, err := readCredentials(node.Etcd)
	if err != nil {
		return nil, err
	}
	endpoints := node.Etcd.Endpoints
	if len(endpoints) == 0 {
		lg, stopping := zapToSlog(log.Handler(), zapcore.WarnLevel)
		srv, err := StartEmbedded(ctx, filepath.Join(node.DataDir, "etcd"), node.Name, node.Etcd.Embedded, WithLogger(lg))
		if err != nil {
			return nil, err
		}
		c.server, c.serverStopping = srv, stopping
		endpoints = []string{node.Etcd.Embedded.ClientURL}
		log.Info("embedded etcd started", "dir", srv.Config().Dir, "client_url", node.Etcd.Embedded.ClientURL,
			"client_cert_auth", node.Etcd.Embedded.ClientCAFile != "")
	}
	if creds.username != "" && creds.tls == nil {
		log.Warn("the etcd password goes over http:// in the clear; use https:// endpoints (docs/etcd.md)", "user", creds.username)
	}
	ccfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: node.Etcd.DialTimeout,
		TLS:         creds.tls,
		Username:    creds.username,
		Password:    creds.password,
		Logger:      zap.NewNop(),
		// Keepalives notice a dead member quickly so the client moves on.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithChainUnaryInterceptor(interceptor(reg))},
	}
	var conns *dialed
	if len(endpoints) > 1 {
		// followMembers closes the connections of a member that went
		// silent: it needs to know them.
		conns = &dialed{conns: map[string][]net.Conn{}}
		ccfg.DialOptions = append(ccfg.DialOptions, grpc.WithContextDialer(conns.dial))
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		// With a user, New authenticates: a wrong password or a refused
		// handshake fails here.
		c.Close()
		return nil, explain(ctx, err, node.Etcd, endpoints, creds)
	}
	c.Client = cli
	// Fail at start, with the endpoints named, rather than at the first
	// boot. The probe key is under the prefix: a user whose role covers
	// only mayu's prefix may read it (and nothing else).
	sctx, cancel := context.WithTimeout(ctx, node.Etcd.DialTimeout)
	defer cancel()
	if _, err := cli.Get(sctx, node.Etcd.Prefix+"health-probe", clientv3.WithCountOnly()); err != nil {
		c.Close()
		return nil, explain(ctx, err, node.Etcd, endpoints, creds)
	}
	// A member down at start costs at most versionTimeout (and the member
	// list, read first, as much).
	if err := checkClusterVersions(ctx, cli, endpoints, min(node.Etcd.DialTimeout, versionTimeout)); err != nil {
		c.Close()
		return nil, err
	}
	octx, stopOutage := context.WithCancel(context.Background())
	outageDone := make(chan struct{})
	go func() {
		defer close(outageDone)
		watchOutage(octx, cli, node.Etcd.Prefix+"health-probe", log, outageCheck, outageTimeout)
	}()
	c.stopOutage = func() { stopOutage(); <-outageDone }
	if len(endpoints) > 1 {
		fctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			followMembers(fctx, cli, ccfg, endpoints, conns, node.Etcd.Prefix+"health-probe", log)
		}()
		c.stopMembers = func() { stop(); <-done }
	}
	return c, nil
}

// Close stops the client and, if embedded, the server.
func (c *Conn) Close() {
	if c.stopOutage != nil {
		c.stopOutage()
	}
	if c.stopMembers != nil {
		c.stopMembers()
	}
	if c.Client != nil {
		c.Client.Close()
	}
	if c.server != nil {
		c.serverStopping.Store(true)
		c.server.Close()
	}
}

// Option tunes StartEmbedded.
type Option func(*embed.Config)

// WithLogger sends the embedded etcd's own log to lg (default: errors only,
// to stderr).
func WithLogger(lg *zap.Logger) Option {
	return func(c *embed.Config) { c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg) }
}

// StartEmbedded starts a single-member etcd in dir with a space quota and
// periodic auto-compaction, and waits until it serves.
func StartEmbedded(ctx context.Context, dir, name string, e config.Embedded, opts ...Option) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	if name != "" {
		cfg.Name = name
	}
	cu, err := url.Parse(e.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("node.etcd.embedded.client_url: %w", err)
	}
	pu, err := url.Parse(e.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("node.etcd.embedded.peer_url: %w", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	tlsInfo, err := serverTLS(e)
	if err != nil {
		return nil, err
	}
	cfg.ClientTLSInfo = tlsInfo
	if pu.Scheme == "https" {
		// A single member has no peers to trust; the listener still
		// needs a certificate.
		cfg.PeerTLSInfo = transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile}
	}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.QuotaBackendBytes = e.QuotaBytes
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = e.CompactionRetention.String()
	cfg.LogLevel = "error"
	for _, o := range opts {
		o(cfg)
	}
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-srv.Server.ReadyNotify():
		return srv, nil
	case err := <-srv.Err():
		srv.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	case <-time.After(60 * time.Second):
		srv.Close()
		return nil, errors.New("embedded etcd did not become ready within 60s")
	case <-ctx.Done():
		srv.Close()
		return nil, ctx.Err()
	}
}
