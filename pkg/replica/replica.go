// Package replica is how replicas know of each other. Each announces itself
// under <prefix>replicas/<name> on an etcd lease, so a dead replica
// disappears by itself; the DHCP leader publishes the hash of its
// cluster-wide configuration under <prefix>config, on its election
// session's lease. A replica whose own hash differs from the leader's does
// not campaign and says so in its log and /readyz: replicas that disagree
// on pools or profiles must never take turns answering.
//
// The hash covers the SHA-256 of every local file the configuration names
// and the replica serves (installer files, templates, iPXE binaries), so
// that replicas given different files by hand disagree like replicas
// given different configurations; Files says which file differs.
//
// A rolling change: update the followers (they stop campaigning, since
// they now disagree with the leader), then restart the leader; its
// resignation removes the published hash and an updated follower wins.
package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Info is what a replica announces.
type Info struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// ConfigHash covers the cluster configuration and Files (ConfigHash).
	ConfigHash string `json:"configHash"`
	// Files are the SHA-256 (hex) of the local files the replica serves,
	// by the configuration key that names them (cluster.install.image).
	Files     map[string]string `json:"files,omitempty"`
	Advertise string            `json:"advertise"`
	HTTP      string            `json:"http"`
	Admin     string            `json:"admin"`
	Metrics   string            `json:"metrics"`
	// Probe is the URL followers probe while this replica leads DHCP
	// (election.Deposition): its own address, never a shared one.
	Probe   string    `json:"probe,omitempty"`
	DHCP    bool      `json:"dhcp"` // takes part in the election
	Started time.Time `json:"started"`
	// Schema is the etcd schema version the replica reads and writes
	// (registry.SchemaVersion); replicas before version 2 announce none.
	Schema int `json:"schema,omitempty"`
	// Unreadable marks an announcement that is no JSON Info (Name is its
	// key); never stored.
	Unreadable bool `json:"-"`
}

// Published is the leader's configuration, at <prefix>config.
type Published struct {
	Hash    string         `json:"hash"`
	Replica string         `json:"replica"`
	Term    int64          `json:"term"`
	Cluster config.Cluster `json:"cluster"` // secrets redacted
	// Files are the leader's file digests (Info.Files): what tells a
	// follower which of its files differ.
	Files map[string]string `json:"files,omitempty"`
}

// ConfigHash is what replicas compare: the hex SHA-256 of the cluster
// configuration's hash and of the digest of each file, in key order.
// Without files it is the configuration's hash itself.
func ConfigHash(clusterHash string, files map[string]string) string {
	if len(files) == 0 {
		return clusterHash
	}
	h := sha256.New()
	fmt.Fprintf(h, "cluster %s\n", clusterHash)
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "file %s %s\n", k, files[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// announceTTL is how long a dead replica stays listed (seconds).
const announceTTL = 10

// AnnounceTTL is how long the announcement of a replica that died stays.
const AnnounceTTL = announceTTL * time.Second

// Replica announces this replica and follows the published configuration.
type Replica struct {
	cli  *clientv3.Client
	keys state.Keys
	info Info
	cfg  *config.Config
	log  *slog.Logger

	metrics *metrics

	mu        sync.Mutex
	published *Published // nil: no leader publishes now
	watching  bool       // the config watch is established
	changed   chan struct{}
}

// New prepares a replica's announcement. Its metrics go to reg (nil:
// nowhere).
func New(cli *clientv3.Client, cfg *config.Config, info Info, log *slog.Logger, reg prometheus.Registerer) *Replica {
	info.Name = cfg.Node.Name
	info.ConfigHash = ConfigHash(cfg.ClusterHash(), info.Files)
	m := newMetrics(reg)
	m.configInfo.WithLabelValues(info.ConfigHash).Set(1)
	r := &Replica{cli: cli, keys: state.Keys{Prefix: cfg.Node.Etcd.Prefix}, info: info, cfg: cfg, log: log, metrics: m, changed: make(chan struct{})}
	r.setFileMetricsLocked()
	return r
}

// Self is what this replica announces.
func (r *Replica) Self() Info { return r.info }

// Run announces the replica and follows <prefix>config until ctx ends.
func (r *Replica) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.announce(ctx) }()
	go func() { defer wg.Done(); r.follow(ctx) }()
	wg.Wait()
}

// announce keeps this replica's announcement on an etcd session of its
// own until ctx ends, then takes it down; a lost session is replaced.
func (r *Replica) announce(ctx context.Context) {
	data, _ := json.Marshal(r.info)
	key := r.keys.Replica(r.info.Name)
	state.Retry(ctx, time.Second, func(err error) {
		r.log.Warn("announcing this replica in etcd failed, retrying", "err", err)
	}, func(ctx context.Context) error {
		// The lease is granted under ctx, so that a stop during an etcd
		// outage does not wait for etcd; the session then only keeps it
		// alive, until ctx ends and it is revoked: the announcement goes
		// at once, not after the TTL.
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		grant, err := r.cli.Grant(gctx, announceTTL)
		cancel()
		if err != nil {
			return state.Unavailable("announce replica", err)
		}
		sess, err := concurrency.NewSession(r.cli, concurrency.WithLease(grant.ID),
			concurrency.WithContext(context.WithoutCancel(ctx)))
		if err != nil {
			return state.Unavailable("announce replica", err)
		}
		defer func() {
			sess.Orphan()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			r.cli.Revoke(rctx, grant.ID)
			cancel()
		}()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = r.cli.Put(pctx, key, string(data), clientv3.WithLease(grant.ID))
		cancel()
		if err != nil {
			return state.Unavailable("announce replica", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("announcement lease lost")
		}
	})
}

// follow keeps the published configuration current. While it cannot
// (etcd unreachable), this replica does not campaign.
func (r *Replica) follow(ctx context.Context) {
	state.Follower{
		Key: r.keys.Config(),
		Load: func(kvs []*mvccpb.KeyValue) {
			var v []byte
			if len(kvs) > 0 {
				v = kvs[0].Value
			}
			r.setPublished(v, true)
		},
		Change: func(ev *clientv3.Event) {
			if ev.Type == clientv3.EventTypeDelete {
				r.setPublished(nil, true)
			} else {
				r.setPublished(ev.Kv.Value, true)
			}
		},
		Broken: func(err error) {
			r.setPublished(nil, false)
			r.log.Warn("following the published configuration failed, retrying", "err", err)
		},
	}.Run(ctx, r.cli)
}

func (r *Replica) setPublished(value []byte, watching bool) {
	var p *Published
	if value != nil {
		p = &Published{}
		if err := json.Unmarshal(value, p); err != nil {
			r.log.Error("the published configuration in etcd is unreadable", "key", r.keys.Config(), "err", err)
			p = &Published{Hash: "unreadable"}
		}
	}
	r.mu.Lock()
	was := r.mismatchLocked()
	r.published, r.watching = p, watching
	now := r.mismatchLocked()
	if now == "" {
		r.metrics.configMatchesLeader.WithLabelValues().Set(1)
	} else {
		r.metrics.configMatchesLeader.WithLabelValues().Set(0)
	}
	r.setFileMetricsLocked()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if now != "" && now != was {
		r.log.Error("CONFIG MISMATCH: this replica's cluster configuration or the files it serves differ from the DHCP leader's; it will not campaign until they agree",
			"replica", r.info.Name, "detail", now)
	} else if now == "" && was != "" {
		r.log.Info("cluster configuration agrees with the leader's again", "replica", r.info.Name, "hash", short(r.info.ConfigHash))
	}
}

func (r *Replica) mismatchLocked() string {
	p := r.published
	if p == nil || p.Hash == r.info.ConfigHash {
		return ""
	}
	msg := fmt.Sprintf("own hash %s, leader %s publishes %s", short(r.info.ConfigHash), hostile.Clip(p.Replica, 64), short(p.Hash))
	if p.Files == nil && p.Hash != "unreadable" {
		return msg + " (the leader announces no file digests: an older mayu?)"
	}
	if diff := r.filesDifferLocked(); len(diff) > 0 {
		return msg + "; files differ: " + strings.Join(diff, "; ")
	}
	return msg + "; the files agree, the cluster: sections differ"
}

// maxFileLabels bounds the file label values taken from what the leader
// publishes.
const maxFileLabels = 16

// filesDifferLocked says which files differ from the leader's, with the
// first 12 hex digits of both digests; nil if they agree or the leader
// publishes none.
func (r *Replica) filesDifferLocked() []string {
	p := r.published
	if p == nil || p.Files == nil {
		return nil
	}
	var out []string
	for _, k := range r.fileKeysLocked() {
		own, theirs := r.info.Files[k], p.Files[k]
		if own != theirs {
			out = append(out, fmt.Sprintf("%s: own %s, leader's %s", k, digestOrAbsent(own), digestOrAbsent(theirs)))
		}
	}
	return out
}

// fileKeysLocked are the keys of this replica's files and of the
// leader's (bounded, and only cluster.* keys of it), sorted.
func (r *Replica) fileKeysLocked() []string {
	keys := map[string]string{}
	for k := range r.info.Files {
		keys[k] = ""
	}
	if p := r.published; p != nil {
		for k := range p.Files {
			if len(keys) >= maxFileLabels {
				break
			}
			if fileKey.MatchString(k) {
				keys[k] = ""
			}
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

// setFileMetricsLocked sets mayu_config_file_matches_leader for every
// file key: 1 unless the leader publishes another digest for it.
func (r *Replica) setFileMetricsLocked() {
	r.metrics.fileMatchesLeader.Reset()
	p := r.published
	for _, k := range r.fileKeysLocked() {
		v := 1.0
		if p != nil && p.Files != nil && p.Files[k] != r.info.Files[k] {
			v = 0
		}
		r.metrics.fileMatchesLeader.WithLabelValues(k).Set(v)
	}
}

// fileKey is what a file key the leader publishes must look like to be
// a label value or named in a message.
var fileKey = regexp.MustCompile(`^cluster\.[a-z0-9_.]{1,56}$`)

var hexDigest = regexp.MustCompile(`^[0-9a-f]{64}$`)

func digestOrAbsent(d string) string {
	switch {
	case d == "":
		return "absent"
	case !hexDigest.MatchString(d):
		return "malformed"
	}
	return short(d)
}

// FilesDiffer names the files whose digests differ from the leader's,
// each with the first 12 hex digits of both; nil if none (or no leader
// publishes).
func (r *Replica) FilesDiffer() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.filesDifferLocked()
}

// Mismatch says why this replica's configuration disagrees with the
// leader's, or "" if it agrees (or no leader publishes).
func (r *Replica) Mismatch() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mismatchLocked()
}

// Eligible reports whether this replica may campaign, and a channel
// closed at the next change.
func (r *Replica) Eligible() (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watching && r.mismatchLocked() == "", r.changed
}

// Publish writes this leader's configuration under its term, on the
// election session's lease: it disappears when the leadership ends.
func (r *Replica) Publish(ctx context.Context, f election.Fence) error {
	data, err := json.Marshal(Published{Hash: r.info.ConfigHash, Replica: r.info.Name, Term: f.Rev, Cluster: r.cfg.Redacted(), Files: r.info.Files})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = f.Write(ctx, r.cli, clientv3.OpPut(r.keys.Config(), string(data), clientv3.WithLease(f.Lease)))
	if err != nil && !errors.Is(err, election.ErrDeposed) {
		return state.Unavailable("publish configuration", err)
	}
	return err
}

// Replicas reads every announced replica, sorted by name.
func (r *Replica) Replicas(ctx context.Context) ([]Info, error) {
	return Announced(ctx, r.cli, r.keys)
}

// Announced reads every replica announced under keys, sorted by name,
// before this one announces itself.
func Announced(ctx context.Context, cli *clientv3.Client, keys state.Keys) ([]Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dir := keys.Replicas()
	resp, err := cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, state.Unavailable("read the replicas", err)
	}
	var out []Info
	for _, kv := range resp.Kvs {
		var i Info
		if json.Unmarshal(kv.Value, &i) != nil {
			i = Info{Name: strings.TrimPrefix(string(kv.Key), dir) + " (unreadable)", Unreadable: true}
		}
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// Published reads the leader's published configuration now (nil if none).
func (r *Replica) Published(ctx context.Context) (*Published, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.keys.Config())
	if err != nil {
		return nil, state.Unavailable("read the published configuration", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var p Published
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return nil, fmt.Errorf("%s in etcd is unreadable: %w", r.keys.Config(), err)
	}
	return &p, nil
}

// Leader is the name of the replica leading DHCP now, "" if none.
func (r *Replica) Leader(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return election.Leader(ctx, r.cli, r.keys)
}

// ProbeURL is the probe URL the named replica announces ("" if none).
func (r *Replica) ProbeURL(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.keys.Replica(name))
	if err != nil {
		return "", state.Unavailable("read a replica's announcement", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	var i Info
	if json.Unmarshal(resp.Kvs[0].Value, &i) != nil {
		return "", nil
	}
	return i.Probe, nil
}

// Voters counts the announced replicas that take part in the election.
func (r *Replica) Voters(ctx context.Context) (int, error) {
	all, err := Announced(ctx, r.cli, r.keys)
	n := 0
	for _, i := range all {
		if i.DHCP {
			n++
		}
	}
	return n, err
}

// Config is this replica's own configuration.
func (r *Replica) Config() *config.Config { return r.cfg }

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
