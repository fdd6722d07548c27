package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
)

// openArtifacts opens this replica's artifact cache and prepares the
// manager that keeps it in step with the catalogue (run in the background
// once everything is up).
func (s *Server) openArtifacts() error {
	cfg := s.cfg
	cache, err := artifact.OpenCache(cfg.Node.Artifacts.CacheDir, cfg.Node.Artifacts.QuotaBytes)
	if err != nil {
		return fmt.Errorf("node.artifacts.cache_dir: %w", err)
	}
	peer, how := peerAddress(cfg.Node)
	if how != "" {
		s.log.Warn("node.artifacts.peer_address is not set: "+how, "peer_address", peer)
	}
	s.artifacts = artifact.NewManager(artifact.Options{
		Client: s.conn.Client, Prefix: cfg.Node.Etcd.Prefix, Timeout: cfg.Node.Etcd.RequestTimeout,
		Replica: cfg.Node.Name, PeerURL: "http://" + net.JoinHostPort(peer.String(), strconv.Itoa(cfg.Node.Ports.HTTP)),
		Cache: cache, Secret: s.peerSecret, PreviousSecret: s.previousPeerSecret, Transfers: cfg.Node.Artifacts.Transfers,
		HTTP: &http.Client{CheckRedirect: artifact.CheckRedirect, Transport: artifact.StallTransport(
			artifact.LimitedTransport(transport(), cfg.Node.Artifacts.MaxBytesPerSecond), time.Minute)},
		Log: s.log, Registerer: s.metrics,
	})
	return nil
}

// peerAddress is the address this replica's peers reach it at: the
// configured one, else the one address it listens on, else the first IPv4
// address of its DHCP interface, else (said in the log, since it is
// usually the shared virtual address) the advertise address.
func peerAddress(n config.Node) (addr netip.Addr, warning string) {
	if n.Artifacts.PeerAddress.IsValid() {
		return n.Artifacts.PeerAddress, ""
	}
	if !n.ListenAddress.IsUnspecified() {
		return n.ListenAddress, ""
	}
	if n.Interface != "" {
		if ifi, err := net.InterfaceByName(n.Interface); err == nil {
			addrs, _ := ifi.Addrs()
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
					return p.Addr(), ""
				}
			}
		}
	}
	return n.AdvertiseAddress, "the advertise address stands in; if it is a virtual address shared by the replicas, peers fetch artifacts from whichever holds it: set this replica's own"
}

// withPeers routes the artifact transfers between replicas to peers, and
// everything else of the boot port to boot.
func withPeers(boot, peers http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/peer/") {
			peers.ServeHTTP(w, r)
			return
		}
		boot.ServeHTTP(w, r)
	})
}

// peerSecret is the key replicas authenticate their artifact transfers
// with: the cluster secret, which every replica follows.
func (s *Server) peerSecret(ctx context.Context) ([]byte, error) {
	k, err := s.registry.Secrets(ctx)
	if err != nil {
		return nil, err
	}
	return k.Current, nil
}

// transport is the HTTP transport of artifact transfers: connections and
// headers are bounded; a body takes as long as it takes, but one that
// stalls for a minute is cut (StallTransport) and the download resumes.
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return t
}

// previousPeerSecret is the cluster secret before the last rotation, while
// node tokens made with it are still accepted.
func (s *Server) previousPeerSecret(ctx context.Context) ([]byte, error) {
	k, err := s.registry.Secrets(ctx)
	if err != nil || k.Previous == nil || time.Now().After(k.PreviousUntil) {
		return nil, err
	}
	return k.Previous, nil
}
