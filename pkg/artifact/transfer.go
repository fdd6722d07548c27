package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/state"
)

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Attempts of one transfer (Download resumes within them with Range).
const (
	upstreamAttempts = 5
	peerAttempts     = 3
	// smallLimit bounds a DIGESTS.asc or .sig fetched whole.
	smallLimit = 1 << 20
)

// reconcile makes one pass: stop transfers nobody needs any more,
// announce what is held, remove what no record names, and start the
// transfers this replica may (Options.Transfers at a time).
func (m *Manager) reconcile(ctx context.Context, sess *concurrency.Session, workers *sync.WaitGroup) {
	m.mu.Lock()
	if !m.synced {
		m.mu.Unlock()
		return
	}
	recs := maps.Clone(m.records)
	named := map[string]bool{} // digests some record names
	for _, e := range recs {
		if e.rec.SHA256 != "" {
			named[e.rec.SHA256] = true
		}
	}
	for _, t := range m.active {
		e, ok := recs[t.name]
		// Removed (or removed and added again): nobody needs these bytes.
		// A record that turned Ready under its downloader is its own doing.
		if t.sha == "" && (!ok || e.create != t.create) || t.sha != "" && !named[t.sha] {
			t.cancel()
		}
	}
	now := time.Now()
	for k, at := range m.retryAt {
		if now.After(at) {
			delete(m.retryAt, k)
		}
	}
	m.mu.Unlock()

	held := map[string]bool{}
	for _, sha := range m.o.Cache.Held() {
		held[sha] = true
	}
	m.collect(ctx, named, recs, held)
	for sha := range held {
		if named[sha] {
			m.announceNow(ctx, sha)
		}
	}

	missing := 0
	names := slices.Sorted(maps.Keys(recs))
	for _, name := range names {
		e := recs[name]
		switch {
		case e.rec.Status == Pending:
			if !m.mayStart(name, name) {
				continue
			}
			ok, err := m.cat.claim(ctx, e, m.o.Replica, sess.Lease())
			if err != nil {
				m.log.Warn("claiming an artifact failed", "artifact", name, "err", err)
				continue
			}
			if ok {
				m.start(ctx, workers, name, &transfer{name: name, create: e.create}, func(ctx context.Context) {
					m.fromUpstream(ctx, e, sess.Lease())
				})
			}
		case e.rec.Status == Ready && !held[e.rec.SHA256]:
			missing++
			sha := e.rec.SHA256
			if !m.mayStart(sha, sha) {
				continue
			}
			h, ok := m.pickPeer(sha)
			if !ok {
				continue
			}
			m.start(ctx, workers, sha, &transfer{name: name, sha: sha}, func(ctx context.Context) {
				m.fromPeer(ctx, name, sha, h, sess.Lease())
			})
		}
	}
	m.met.missing.Set(float64(missing))
}

// mayStart reports whether a transfer into partial key may start now: a
// slot is free, none runs into key, and retryKey is not backing off.
func (m *Manager) mayStart(key, retryKey string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, running := m.active[key]
	_, waiting := m.retryAt[retryKey]
	return !running && !waiting && len(m.active) < m.o.Transfers
}

// pickPeer chooses a live holder of sha other than this replica, not
// backing off, at random (so that replicas catching up spread over the
// holders).
func (m *Manager) pickPeer(sha string) (Holder, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var cands []Holder
	for _, h := range m.holdersLocked(sha) {
		if _, waiting := m.retryAt[sha+"/"+h.Replica]; h.Replica != m.o.Replica && !waiting {
			cands = append(cands, h)
		}
	}
	if len(cands) == 0 {
		return Holder{}, false
	}
	return cands[rand.IntN(len(cands))], true
}

func (m *Manager) later(key string) { m.laterBy(key, backoff) }

func (m *Manager) laterBy(key string, d time.Duration) {
	m.mu.Lock()
	m.retryAt[key] = time.Now().Add(d)
	m.mu.Unlock()
}

// start runs a transfer into partial key until it ends or is canceled.
func (m *Manager) start(ctx context.Context, workers *sync.WaitGroup, key string, t *transfer, run func(context.Context)) {
	tctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	m.mu.Lock()
	m.active[key] = t
	m.mu.Unlock()
	workers.Add(1)
	go func() {
		defer workers.Done()
		defer func() {
			cancel()
			m.mu.Lock()
			delete(m.active, key)
			m.mu.Unlock()
			m.wake()
		}()
		run(tctx)
	}()
}

// collect removes the cache files no record references: complete files
// of digests no record names, partial files of no pending record or named
// digest. Transfers under way and pinned keys stay.
func (m *Manager) collect(ctx context.Context, named map[string]bool, recs map[string]entry, held map[string]bool) {
	m.mu.Lock()
	keep := func(key string) bool {
		_, active := m.active[key]
		e, pending := recs[key]
		return active || m.pinned[key] > 0 || named[key] || pending && e.rec.Status == Pending
	}
	var drop, dropPartial []string
	for sha := range held {
		if !keep(sha) {
			drop = append(drop, sha)
		}
	}
	for _, key := range m.o.Cache.Partials() {
		if !keep(key) {
			dropPartial = append(dropPartial, key)
		}
	}
	m.mu.Unlock()
	for _, sha := range drop {
		if err := m.o.Cache.Remove(sha); err != nil {
			m.log.Error("removing an artifact no record names failed", "sha256", sha, "err", err)
			continue
		}
		delete(held, sha)
		m.log.Info("removed the bytes of an artifact no record names any more", "sha256", sha)
		m.mu.Lock()
		announced := m.held[sha]
		delete(m.held, sha)
		m.mu.Unlock()
		if announced {
			if err := m.cat.unannounce(ctx, sha, m.o.Replica); err != nil {
				m.log.Warn("withdrawing a holder announcement failed", "sha256", sha, "err", err)
			}
		}
	}
	for _, key := range dropPartial {
		if err := m.o.Cache.RemovePartial(key); err != nil {
			m.log.Error("removing a partial artifact no record names failed", "key", key, "err", err)
		}
	}
}

// announceNow tells the peers that this replica holds sha (once per
// session).
func (m *Manager) announceNow(ctx context.Context, sha string) {
	m.mu.Lock()
	sess := m.sess
	done := sess == nil || m.held[sha]
	m.mu.Unlock()
	if done {
		return
	}
	since := time.Now().UTC()
	if f, err := m.o.Cache.Open(sha); err == nil {
		if st, err := f.Stat(); err == nil {
			since = st.ModTime().UTC()
		}
		f.Close()
	}
	h := Holder{Replica: m.o.Replica, PeerURL: m.o.PeerURL, Since: since}
	if err := m.cat.announce(ctx, sha, h, sess.Lease()); err != nil {
		m.log.Warn("announcing an artifact this replica holds failed", "sha256", sha, "err", err)
		return
	}
	m.mu.Lock()
	if m.sess == sess {
		m.held[sha] = true
	}
	m.mu.Unlock()
}

// tracker publishes one transfer's progress about every second (on the
// session lease) and counts its bytes; stop deletes the progress key.
type tracker struct {
	bytes, total, last atomic.Int64
}

func (m *Manager) track(ctx context.Context, name, from string, start int64, lease clientv3.LeaseID) (*tracker, func()) {
	t := &tracker{}
	t.bytes.Store(start)
	t.last.Store(start)
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	publish := func() {
		p := Progress{Replica: m.o.Replica, From: from, Bytes: t.bytes.Load(), Total: t.total.Load(), Updated: time.Now().UTC()}
		if err := m.cat.progress(tctx, name, m.o.Replica, &p, lease); err != nil && tctx.Err() == nil {
			m.log.Debug("publishing artifact progress failed", "artifact", name, "err", err)
		}
	}
	go func() {
		defer close(done)
		publish()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-tick.C:
				publish()
			}
		}
	}()
	return t, func() {
		cancel()
		<-done
		dctx, c := context.WithTimeout(context.WithoutCancel(ctx), m.o.Timeout)
		m.cat.progress(dctx, name, m.o.Replica, nil, lease)
		c()
	}
}

// update is Download's progress callback.
func (t *tracker) update(m *Manager, source string) func(bytes, total int64) {
	return func(bytes, total int64) {
		if last := t.last.Swap(bytes); bytes > last {
			m.met.bytes.WithLabelValues(source).Add(float64(bytes - last))
		}
		t.bytes.Store(bytes)
		t.total.Store(total)
	}
}

// fromUpstream downloads a pending artifact whose claim this replica
// holds, verifies it the way its record says, and marks it Ready, or
// Failed (nothing stored) when a check refuses it. A transfer cut short
// (network, upstream) keeps the claim and the partial file and is tried
// again after a pause; one whose session is lost leaves the claim to
// another replica.
func (m *Manager) fromUpstream(ctx context.Context, e entry, lease clientv3.LeaseID) {
	r := e.rec
	log := m.log.With("artifact", r.Name, "url", redact(r.Source.URL))
	finish := func(r Record) bool {
		var ne entry
		err := state.Retry(ctx, time.Second, func(err error) {
			log.Warn("recording the artifact's verification failed, retrying", "err", err)
		}, func(ctx context.Context) error {
			var err error
			ne, err = m.cat.finish(ctx, e, r, m.o.Replica)
			if errors.Is(err, errChanged) {
				return nil
			}
			return err
		})
		if err != nil {
			return false
		}
		if ne.create == 0 {
			log.Info("the artifact was removed or changed while it was downloaded; dropped")
			return false
		}
		m.apply(ne)
		return true
	}
	refuse := func(reason, msg string) {
		m.met.refused.WithLabelValues(reason).Inc()
		m.met.transfers.WithLabelValues(fromUpstream, resultRefused).Inc()
		log.Error("artifact refused; nothing stored", "reason", msg)
		r.Status, r.Error = Failed, msg
		finish(r)
	}
	retry := func(err error) {
		if ctx.Err() != nil {
			return // the session or the record went: nothing to count
		}
		var status *StatusError
		if errors.As(err, &status) && status.Permanent() {
			// Asking again will not change the answer: say why in the
			// record (mayuctl artifact list) and release the claim.
			refuse(refusedUpstream, err.Error())
			return
		}
		m.met.transfers.WithLabelValues(fromUpstream, resultFailed).Inc()
		log.Warn("downloading the artifact from upstream failed; trying again", "err", err, "in", backoff)
		m.later(r.Name)
	}

	// The signed digests first: a file they do not cover is not
	// downloaded at all.
	var kr *Keyring
	if r.Source.Keyring != "" {
		var err error
		if kr, err = ParseKeyring([]byte(r.Source.Keyring)); err != nil {
			refuse(refusedDigests, "keyring: "+err.Error())
			return
		}
	}
	var verified []string
	var want512 string
	if u := r.Source.DigestsURL; u != "" {
		data, err := Get(ctx, m.o.HTTP, u, smallLimit)
		if err != nil {
			retry(fmt.Errorf("fetching the digests file: %w", err))
			return
		}
		var signer string
		want512, signer, err = CheckDigests(data, kr, fileName(r.Source.URL))
		if err != nil {
			refuse(refusedDigests, fmt.Sprintf("digests file %s refused: %v", u, err))
			return
		}
		verified = append(verified, "SHA512 from "+path.Base(u)+" signed by "+signer)
	}
	var sig []byte
	if u := r.Source.SigURL; u != "" {
		var err error
		if sig, err = Get(ctx, m.o.HTTP, u, smallLimit); err != nil {
			retry(fmt.Errorf("fetching the signature: %w", err))
			return
		}
	}
	if r.SHA256 != "" && want512 == "" && sig == nil && m.o.Cache.Has(r.SHA256) {
		// Another name has the same bytes: nothing to download.
		r.Status, r.Size, r.Verified, r.ReadyAt = Ready, m.size(r.SHA256), "sha256 given by the operator", time.Now().UTC()
		if finish(r) {
			m.announceNow(ctx, r.SHA256)
		}
		return
	}

	p, err := m.o.Cache.Begin(r.Name)
	if err != nil {
		retry(err)
		return
	}
	if n := p.Size(); n > 0 {
		log.Info("resuming the download from upstream", "bytes_held", n)
	}
	t, stop := m.track(ctx, r.Name, fromUpstream, p.Size(), lease)
	err = Download(ctx, m.o.HTTP, r.Source.URL, nil, p, upstreamAttempts, m.o.Cache.Fits, t.update(m, fromUpstream))
	stop()
	if err != nil {
		if errors.Is(err, ErrNoSpace) {
			p.Discard()
			refuse(refusedNoSpace, err.Error())
			return
		}
		if status := (*StatusError)(nil); errors.As(err, &status) && status.Permanent() {
			p.Discard()
		} else {
			p.Close()
		}
		retry(err)
		return
	}
	got256, got512 := p.Hashes()
	if want512 != "" && got512 != want512 {
		p.Discard()
		refuse(refusedSHA512, fmt.Sprintf("wrong digest: %s lists SHA-512 %s, the download has %s", path.Base(r.Source.DigestsURL), want512, got512))
		return
	}
	if sig != nil {
		rd, err := p.Reader()
		if err != nil {
			p.Close()
			retry(err)
			return
		}
		signer, err := CheckDetached(rd, sig, kr)
		rd.Close()
		if err != nil {
			p.Discard()
			refuse(refusedSignature, fmt.Sprintf("signature %s refused: %v", r.Source.SigURL, err))
			return
		}
		verified = append(verified, "detached signature by "+signer)
	}
	if r.SHA256 != "" {
		if got256 != r.SHA256 {
			p.Discard()
			refuse(refusedSHA256, fmt.Sprintf("wrong digest: the operator gave sha256 %s, the download has %s", r.SHA256, got256))
			return
		}
		verified = append([]string{"sha256 given by the operator"}, verified...)
	}
	size := p.Size()
	m.pin(got256) // until memory has the Ready record naming it
	defer m.unpin(got256)
	if err := p.Commit(got256); err != nil {
		if errors.Is(err, ErrDigest) { // changed on disk since it was hashed
			refuse(refusedSHA256, err.Error())
			return
		}
		retry(err)
		return
	}
	r.Status, r.SHA256, r.Size, r.ReadyAt = Ready, got256, size, time.Now().UTC()
	r.Verified, r.Source.SHA512 = strings.Join(verified, "; "), want512
	if finish(r) {
		m.met.transfers.WithLabelValues(fromUpstream, resultOK).Inc()
		log.Info("artifact downloaded and verified", "sha256", got256, "bytes", size)
		m.announceNow(ctx, got256)
	}
}

// fromPeer fetches the verified bytes of sha from a peer that holds them,
// checks the digest, and announces this replica as a holder too. A peer
// that fails is left alone for a while; the next pass picks another.
func (m *Manager) fromPeer(ctx context.Context, name, sha string, h Holder, lease clientv3.LeaseID) {
	log := m.log.With("artifact", name, "sha256", sha, "peer", h.Replica)
	failed := func(err error) {
		if ctx.Err() != nil {
			return
		}
		m.met.transfers.WithLabelValues(fromPeer, resultFailed).Inc()
		log.Warn("fetching an artifact from a peer failed; trying another", "err", err)
		m.later(sha + "/" + h.Replica)
	}
	if m.o.Secret == nil {
		failed(errors.New("no cluster secret to authenticate with"))
		return
	}
	secret, err := m.o.Secret(ctx)
	if err != nil {
		failed(fmt.Errorf("reading the cluster secret: %w", err))
		return
	}
	p, err := m.o.Cache.Begin(sha)
	if err != nil {
		failed(err)
		return
	}
	if n := p.Size(); n > 0 {
		log.Info("resuming the copy from a peer", "bytes_held", n)
	}
	hdr := http.Header{"Authorization": {PeerAuthorization(secret, m.o.Replica, h.Replica, time.Now(), sha)}}
	t, stop := m.track(ctx, name, h.Replica, p.Size(), lease)
	err = Download(ctx, m.o.HTTP, strings.TrimSuffix(h.PeerURL, "/")+PeerPath+sha, hdr, p, peerAttempts, m.o.Cache.Fits, t.update(m, fromPeer))
	stop()
	if err != nil {
		if errors.Is(err, ErrNoSpace) {
			p.Discard()
			m.met.refused.WithLabelValues(refusedNoSpace).Inc()
			m.met.transfers.WithLabelValues(fromPeer, resultRefused).Inc()
			log.Error("an artifact does not fit this replica's cache", "err", err)
			m.laterBy(sha, noSpaceBackoff) // until space is freed: not every few seconds
			return
		}
		p.Close()
		failed(err)
		return
	}
	if err := p.Commit(sha); err != nil {
		if errors.Is(err, ErrDigest) {
			m.met.refused.WithLabelValues(refusedSHA256).Inc()
			m.met.transfers.WithLabelValues(fromPeer, resultRefused).Inc()
			log.Error("a peer sent bytes of another digest; refused", "err", err)
			m.later(sha + "/" + h.Replica)
			return
		}
		failed(err)
		return
	}
	m.met.transfers.WithLabelValues(fromPeer, resultOK).Inc()
	log.Info("artifact fetched from a peer and verified")
	m.announceNow(ctx, sha)
}

// size is the size of a held file (0 if unknown).
func (m *Manager) size(sha string) int64 {
	f, err := m.o.Cache.Open(sha)
	if err != nil {
		return 0
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// fileName is the base name of a URL's path: the name a DIGESTS file
// lists the file under.
func fileName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return path.Base(raw)
	}
	return path.Base(u.Path)
}
