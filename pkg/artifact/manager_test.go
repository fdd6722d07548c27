package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/state"
)

var testSecret = []byte("the cluster secret of the artifact tests")

// replica is one Manager with its own cache directory and its own HTTP
// server serving its PeerHandler, as a mayu replica has.
type replica struct {
	t      *testing.T
	name   string
	dir    string
	cli    *clientv3.Client
	m      *Manager
	cache  *Cache
	srv    *httptest.Server
	served atomic.Int64 // bytes its peer endpoint sent
	// throttle, when set, slows its peer endpoint down (bytes per 10 ms).
	throttle atomic.Int64
	// broken makes its peer endpoint answer 503 (1) or other bytes (2).
	broken atomic.Int32
	cancel context.CancelFunc
	done   chan struct{}
}

func newReplica(t *testing.T, cli *clientv3.Client, name, dir string) *replica {
	t.Helper()
	r := &replica{t: t, name: name, dir: dir, cli: cli}
	var h atomic.Pointer[http.Handler]
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch r.broken.Load() {
		case 1:
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case 2:
			w = &wrongBytes{ResponseWriter: w}
		}
		(*h.Load()).ServeHTTP(&countingWriter{ResponseWriter: w, n: &r.served, throttle: &r.throttle}, req)
	}))
	t.Cleanup(r.srv.Close)
	cache, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.cache = cache
	r.m = NewManager(Options{
		Client: cli, Prefix: etcdtest.Prefix(t), Replica: name, PeerURL: r.srv.URL, Cache: cache,
		Secret: func(context.Context) ([]byte, error) { return testSecret, nil },
	})
	ph := r.m.PeerHandler()
	h.Store(&ph)
	return r
}

// start runs the Manager until stop (or the end of the test).
func (r *replica) start() *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() { defer close(r.done); r.m.Run(ctx) }()
	r.t.Cleanup(r.stop)
	return r
}

// stop ends Run (its session is revoked: claims and holder keys go).
func (r *replica) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// wrongBytes flips every byte a handler writes: a peer sending other
// bytes under the right digest.
type wrongBytes struct{ http.ResponseWriter }

func (w *wrongBytes) Write(p []byte) (int, error) {
	q := make([]byte, len(p))
	for i, c := range p {
		q[i] = ^c
	}
	return w.ResponseWriter.Write(q)
}

type countingWriter struct {
	http.ResponseWriter
	n        *atomic.Int64
	throttle *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := len(b)
		if t := int(w.throttle.Load()); t > 0 {
			chunk = min(chunk, t)
			time.Sleep(10 * time.Millisecond)
		}
		n, err := w.ResponseWriter.Write(b[:chunk])
		written += n
		w.n.Add(int64(n))
		if err != nil {
			return written, err
		}
		b = b[chunk:]
	}
	return written, nil
}

// origin is an upstream: it serves one file, counting the GETs that started at byte 0.
type origin struct {
	srv      *httptest.Server
	data     []byte
	sha      string
	full     atomic.Int64
	requests atomic.Int64
	throttle atomic.Int64
	served   atomic.Int64
	// extra are other files of the release directory, by base name.
	extra atomic.Pointer[map[string][]byte]
}

func newOrigin(t *testing.T, size int) *origin {
	u := &origin{data: make([]byte, size)}
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(u.data)
	sum := sha256.Sum256(u.data)
	u.sha = hex.EncodeToString(sum[:])
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if extra := u.extra.Load(); extra != nil {
			if data, ok := (*extra)[path.Base(r.URL.Path)]; ok {
				http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(data))
				return
			}
		}
		u.requests.Add(1)
		if r.Header.Get("Range") == "" || strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
			u.full.Add(1)
		}
		http.ServeContent(&countingWriter{ResponseWriter: w, n: &u.served, throttle: &u.throttle}, r, "file.bin", time.Unix(1700000000, 0), bytes.NewReader(u.data))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *origin) url() string { return u.srv.URL + "/releases/file.bin" }

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startReplicas(t *testing.T, cli *clientv3.Client, n int) []*replica {
	var rs []*replica
	for i := range n {
		rs = append(rs, newReplica(t, cli, "mayu-"+string(rune('1'+i)), t.TempDir()).start())
	}
	for _, r := range rs {
		eventually(t, 10*time.Second, r.name+" read the catalogue", r.m.Synced)
	}
	return rs
}

func holdAll(t *testing.T, rs []*replica, sha string) {
	t.Helper()
	for _, r := range rs {
		eventually(t, 30*time.Second, r.name+" holds "+sha[:12], func() bool { return r.m.Has(sha) })
	}
}

// An artifact added with its sha256 is downloaded from upstream by exactly
// one replica; the others copy it from a peer. Every replica announces
// itself as a holder, and the progress keys go once the transfers end.
func TestAddedOnceReplicatedToEveryReplica(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 3<<20)
	rs := startReplicas(t, cli, 3)
	rec, err := rs[0].m.Add(context.Background(), AddRequest{Name: "image-1", URL: up.url(), SHA256: up.sha}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != Pending || rec.AddedBy != "alice" {
		t.Fatalf("added %+v", rec)
	}
	holdAll(t, rs, up.sha)
	if n := up.full.Load(); n != 1 {
		t.Errorf("upstream served %d full downloads, want 1", n)
	}
	for _, r := range rs {
		eventually(t, 10*time.Second, r.name+" sees 3 holders and the record ready", func() bool {
			got, ok := r.m.Lookup("image-1")
			return ok && got.Status == Ready && len(r.m.Holders(up.sha)) == 3 && len(r.m.Progress("image-1")) == 0
		})
	}
	got, _ := rs[2].m.Lookup("image-1")
	if got.SHA256 != up.sha || got.Size != int64(len(up.data)) || got.ReadyAt.IsZero() || !strings.Contains(got.Verified, "sha256") {
		t.Errorf("ready record %+v", got)
	}
	var fromUp, fromPeers float64
	for _, r := range rs {
		fromUp += testutil.ToFloat64(r.m.met.transfers.WithLabelValues(fromUpstream, resultOK))
		fromPeers += testutil.ToFloat64(r.m.met.transfers.WithLabelValues(fromPeer, resultOK))
		// The gauge is counted by the reconciler's next pass after the
		// copy ended (woken by it, or its 2 s resync), not by the copy.
		eventually(t, 10*time.Second, r.name+"'s mayu_artifact_missing back to 0", func() bool {
			return testutil.ToFloat64(r.m.met.missing) == 0
		})
		f, err := r.m.Open(up.sha)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(data, up.data) {
			t.Errorf("%s holds other bytes", r.name)
		}
	}
	if fromUp != 1 || fromPeers != 2 {
		t.Errorf("%v transfers from upstream, %v from peers; want 1 and 2", fromUp, fromPeers)
	}
	// The claim went with the download.
	resp, err := cli.Get(context.Background(), state.Keys{Prefix: etcdtest.Prefix(t)}.ArtifactClaim("image-1"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("claim left: %v %v", resp, err)
	}
	if _, err := rs[1].m.Add(context.Background(), AddRequest{Name: "image-1", URL: up.url(), SHA256: up.sha}, "bob"); !errors.Is(err, ErrExists) {
		t.Errorf("adding the name again: %v, want ErrExists", err)
	}
}

// A download whose digest is not the one given is refused: the record
// says Failed with both digests, and no replica keeps any byte of it.
func TestWrongDigestRefusedNothingStored(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 1<<20)
	rs := startReplicas(t, cli, 2)
	wrong := strings.Repeat("0", 64)
	if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: "image-bad", URL: up.url(), SHA256: wrong}, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		eventually(t, 20*time.Second, r.name+" sees the artifact failed", func() bool {
			got, _ := r.m.Lookup("image-bad")
			return got.Status == Failed
		})
	}
	got, _ := rs[1].m.Lookup("image-bad")
	if !strings.Contains(got.Error, wrong) || !strings.Contains(got.Error, up.sha) || !strings.Contains(got.Error, "wrong digest") {
		t.Errorf("error %q does not name both digests", got.Error)
	}
	var refused float64
	for _, r := range rs {
		if h, p := r.cache.Held(), r.cache.Partials(); len(h)+len(p) != 0 {
			t.Errorf("%s keeps %v %v", r.name, h, p)
		}
		refused += testutil.ToFloat64(r.m.met.refused.WithLabelValues(refusedSHA256))
	}
	if refused != 1 || up.full.Load() != 1 {
		t.Errorf("%v refusals, %d downloads; want 1 and 1", refused, up.full.Load())
	}
}

// The replica holding the claim dies mid-download: its session goes, and
// another replica takes the claim and downloads (upstream is asked again,
// as documented). The dead one, started again, catches up from a peer and
// drops its stale partial file.
func TestClaimHolderKilledAnotherTakesOver(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 2<<20)
	// ~400 KB/s, about 5 s: progress is published each second, and the
	// stop must come before the end.
	up.throttle.Store(4 << 10)
	rs := startReplicas(t, cli, 3)
	if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: "image-2", URL: up.url(), SHA256: up.sha}, "alice"); err != nil {
		t.Fatal(err)
	}
	var first *replica
	eventually(t, 10*time.Second, "a replica reports progress from upstream", func() bool {
		for _, p := range rs[0].m.Progress("image-2") {
			if p.From == fromUpstream && p.Bytes > 0 {
				for _, r := range rs {
					if r.name == p.Replica {
						first = r
					}
				}
				return true
			}
		}
		return false
	})
	first.stop()
	if first.m.Has(up.sha) {
		t.Fatal("the killed replica finished before it was killed; slow the upstream down")
	}
	up.throttle.Store(0)
	var rest []*replica
	for _, r := range rs {
		if r != first {
			rest = append(rest, r)
		}
	}
	holdAll(t, rest, up.sha)
	if n := up.full.Load(); n != 2 {
		t.Errorf("upstream served %d full downloads, want 2 (one per downloader)", n)
	}
	if p := first.cache.Partials(); len(p) != 1 {
		t.Fatalf("the killed replica keeps partials %v, want its download's", p)
	}
	// Started again on the same cache, it gets the bytes from a peer and
	// removes the partial file no pending record names any more.
	cache, err := OpenCache(first.dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	again := newReplica(t, cli, first.name, first.dir)
	again.cache, again.m.o.Cache = cache, cache
	again.start()
	holdAll(t, []*replica{again}, up.sha)
	eventually(t, 10*time.Second, "the stale partial is removed", func() bool { return len(cache.Partials()) == 0 })
	if n := up.full.Load(); n != 2 {
		t.Errorf("upstream served %d full downloads after the restart, want still 2", n)
	}
}

// A replica that joins later catches up from its peers, with the upstream
// gone; one that restarts mid-transfer from a peer resumes where it was.
func TestLateReplicaCatchesUpAndResumes(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 2<<20)
	rs := startReplicas(t, cli, 1)
	if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: "image-3", URL: up.url(), SHA256: up.sha}, "alice"); err != nil {
		t.Fatal(err)
	}
	holdAll(t, rs, up.sha)
	up.srv.Close()

	rs[0].throttle.Store(4 << 10) // ~400 KB/s: the stop comes mid-transfer
	late := newReplica(t, cli, "mayu-late", t.TempDir()).start()
	eventually(t, 10*time.Second, "the late replica reports progress from a peer", func() bool {
		for _, p := range late.m.Progress("image-3") {
			if p.Replica == "mayu-late" && p.From == rs[0].name && p.Bytes > 256<<10 {
				return true
			}
		}
		return false
	})
	late.stop()
	sentBefore := rs[0].served.Load()
	rs[0].throttle.Store(0)
	cache, err := OpenCache(late.dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p := cache.Partials(); len(p) != 1 || p[0] != up.sha {
		t.Fatalf("partials after the stop: %v", p)
	}
	again := newReplica(t, cli, "mayu-late", late.dir)
	again.cache, again.m.o.Cache = cache, cache
	again.start()
	holdAll(t, []*replica{again}, up.sha)
	if resent := rs[0].served.Load() - sentBefore; resent >= int64(len(up.data)) {
		t.Errorf("the restarted replica was sent %d bytes again, the whole file is %d: no resume", resent, len(up.data))
	}
	if n := up.full.Load(); n != 1 {
		t.Errorf("upstream served %d full downloads, want 1", n)
	}
}

// A download that would not fit the cache is refused before it starts.
func TestTooLargeRefused(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 1<<20)
	r := newReplica(t, cli, "mayu-1", t.TempDir())
	small, err := OpenCache(t.TempDir(), 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	r.cache, r.m.o.Cache = small, small
	r.start()
	if _, err := r.m.Add(context.Background(), AddRequest{Name: "too-large", URL: up.url(), SHA256: up.sha}, "alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the artifact is refused", func() bool {
		got, _ := r.m.Lookup("too-large")
		return got.Status == Failed && strings.Contains(got.Error, "does not fit")
	})
	// (What the origin pushed into the socket before the refusal is not
	// measured: loopback buffers take much of it.)
	if len(small.Held())+len(small.Partials()) != 0 || small.Used() != 0 {
		t.Errorf("the cache holds %v %v, %d bytes", small.Held(), small.Partials(), small.Used())
	}
	if n := testutil.ToFloat64(r.m.met.refused.WithLabelValues(refusedNoSpace)); n != 1 {
		t.Errorf("counted %v", n)
	}
}

// A peer that fails or sends other bytes is left for another; bytes of
// another digest are refused and counted, never kept.
func TestBadPeerSkipped(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 512<<10)
	rs := startReplicas(t, cli, 2)
	if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: "image-5", URL: up.url(), SHA256: up.sha}, "alice"); err != nil {
		t.Fatal(err)
	}
	holdAll(t, rs, up.sha)
	rs[0].broken.Store(1)
	rs[1].broken.Store(2)
	late := newReplica(t, cli, "mayu-late", t.TempDir()).start()
	eventually(t, 10*time.Second, "the late replica tried both peers", func() bool {
		return testutil.ToFloat64(late.m.met.transfers.WithLabelValues(fromPeer, resultFailed)) >= 1 &&
			testutil.ToFloat64(late.m.met.refused.WithLabelValues(refusedSHA256)) >= 1
	})
	if late.m.Has(up.sha) || len(late.cache.Held()) != 0 {
		t.Fatal("bytes of another digest were kept")
	}
	rs[0].broken.Store(0)
	holdAll(t, []*replica{late}, up.sha)
}

// Remove is refused while something uses the artifact; once removed, the
// bytes vanish from every replica's cache and the holders go.
func TestRemoveRefusedInUseElseBytesVanish(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 1<<20)
	rs := startReplicas(t, cli, 2)
	ctx := context.Background()
	if _, err := rs[0].m.Add(ctx, AddRequest{Name: "image-4", URL: up.url(), SHA256: up.sha}, "alice"); err != nil {
		t.Fatal(err)
	}
	holdAll(t, rs, up.sha)
	err := rs[1].m.Remove(ctx, "image-4", func(name string) string { return "profile core names it" })
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "profile core") {
		t.Fatalf("remove in use: %v", err)
	}
	if _, ok := rs[0].m.Lookup("image-4"); !ok || !rs[0].m.Has(up.sha) {
		t.Fatal("a refused remove removed something")
	}
	if err := rs[1].m.Remove(ctx, "image-4", func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if err := rs[1].m.Remove(ctx, "image-4", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing it again: %v", err)
	}
	for _, r := range rs {
		eventually(t, 10*time.Second, r.name+" drops the bytes", func() bool {
			_, ok := r.m.Lookup("image-4")
			return !ok && len(r.cache.Held()) == 0 && len(r.m.Holders(up.sha)) == 0
		})
	}
	resp, err := cli.Get(ctx, state.Keys{Prefix: etcdtest.Prefix(t)}.ArtifactHolders(), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("holder keys left: %v %v", resp.Kvs, err)
	}
}

// Two names of the same bytes: removing one keeps the bytes.
func TestRemoveKeepsBytesAnotherNameHas(t *testing.T) {
	cli := etcdtest.Start(t)
	rs := startReplicas(t, cli, 1)
	ctx := context.Background()
	data := []byte("the same bytes under two names")
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	for _, name := range []string{"a", "b"} {
		if _, err := rs[0].m.Upload(ctx, name, bytes.NewReader(data), int64(len(data)), "", "alice"); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs[0].m.Remove(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * resync / 2)
	if !rs[0].m.Has(sha) {
		t.Fatal("the bytes went although b names them")
	}
}

// An upload is verified and stored before its record exists; the peers
// copy it. A wrong sha256 or a name taken stores nothing.
func TestUpload(t *testing.T) {
	cli := etcdtest.Start(t)
	rs := startReplicas(t, cli, 2)
	ctx := context.Background()
	data := bytes.Repeat([]byte("an installer image "), 50000)
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])

	_, err := rs[0].m.Upload(ctx, "up-bad", bytes.NewReader(data), int64(len(data)), strings.Repeat("1", 64), "alice")
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), sha) {
		t.Fatalf("upload with a wrong sha256: %v", err)
	}
	if _, ok := rs[0].m.Lookup("up-bad"); ok || len(rs[0].cache.Held())+len(rs[0].cache.Partials()) != 0 {
		t.Fatal("a refused upload left something")
	}
	_, err = rs[0].m.Upload(ctx, "up-short", bytes.NewReader(data[:10]), int64(len(data)), "", "alice")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("short upload: %v", err)
	}

	rec, err := rs[0].m.Upload(ctx, "up-1", bytes.NewReader(data), -1, sha, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != Ready || rec.SHA256 != sha || rec.Size != int64(len(data)) || !rec.Source.Uploaded {
		t.Errorf("uploaded %+v", rec)
	}
	holdAll(t, rs, sha)
	if _, err := rs[1].m.Upload(ctx, "up-1", bytes.NewReader(data), -1, "", "bob"); !errors.Is(err, ErrExists) {
		t.Errorf("upload under a taken name: %v", err)
	}
	if len(rs[0].cache.Partials())+len(rs[1].cache.Partials()) != 0 {
		t.Error("partial files left")
	}
}

// Add refuses what it cannot download or verify, naming what is wrong.
func TestAddRefusesBadRequests(t *testing.T) {
	cli := etcdtest.Start(t)
	m := newReplica(t, cli, "mayu-1", t.TempDir()).m
	sha := strings.Repeat("a", 64)
	for _, tc := range []struct {
		req  AddRequest
		want string
	}{
		{AddRequest{Name: "../etc", URL: "http://x/f", SHA256: sha}, "artifact name"},
		{AddRequest{Name: "a", URL: "ftp://x/f", SHA256: sha}, "not an http or https URL"},
		{AddRequest{Name: "a", URL: "file:///etc/passwd", SHA256: sha}, "not an http or https URL"},
		{AddRequest{Name: "a", URL: "http:///f", SHA256: sha}, "no host"},
		{AddRequest{Name: "a", URL: "http://user:secret@x/f", SHA256: sha}, "holds credentials"},
		{AddRequest{Name: "a", URL: "http://x/f"}, "nothing to verify"},
		{AddRequest{Name: "a", URL: "http://x/f", SHA256: strings.ToUpper(sha)}, "sha256"},
		{AddRequest{Name: "a", URL: "http://x/f", DigestsURL: "http://x/f.DIGESTS.asc"}, "keyring"},
		{AddRequest{Name: "a", URL: "http://x/f", SigURL: "gopher://x/f.sig", Keyring: "k"}, "signature url"},
		{AddRequest{Name: "a", URL: "http://x/f", SigURL: "http://x/f.sig", Keyring: "not a key"}, "keyring"},
	} {
		_, err := m.Add(context.Background(), tc.req, "alice")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want ErrInvalid saying %q", tc.req, err, tc.want)
		}
	}
	resp, err := cli.Get(context.Background(), etcdtest.Prefix(t), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("refused adds wrote %d keys (%v)", resp.Count, err)
	}
}

// A lost session (its lease revoked, as etcd does when a replica freezes
// past the TTL) is replaced, and the replica announces what it holds again.
func TestSessionLostReplaced(t *testing.T) {
	cli := etcdtest.Start(t)
	rs := startReplicas(t, cli, 1)
	ctx := context.Background()
	data := []byte("held across sessions")
	if _, err := rs[0].m.Upload(ctx, "s", bytes.NewReader(data), -1, "", "alice"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	key := state.Keys{Prefix: etcdtest.Prefix(t)}.ArtifactHolder(hex.EncodeToString(sum[:]), rs[0].name)
	var lease int64
	eventually(t, 10*time.Second, "the holder key exists", func() bool {
		resp, err := cli.Get(ctx, key)
		if err == nil && len(resp.Kvs) == 1 {
			lease = resp.Kvs[0].Lease
		}
		return lease != 0
	})
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the holder key is back on a new lease", func() bool {
		resp, err := cli.Get(ctx, key)
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != lease
	})
}

// Transfers run at most Options.Transfers at a time.
func TestTransfersBounded(t *testing.T) {
	cli := etcdtest.Start(t)
	var mu sync.Mutex
	running, most := 0, 0
	up := newOrigin(t, 256<<10)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		up.srv.Config.Handler.ServeHTTP(w, r)
		mu.Lock()
		running--
		mu.Unlock()
	}))
	defer slow.Close()
	rs := startReplicas(t, cli, 1)
	for i := range 5 {
		name := "bounded-" + string(rune('a'+i))
		if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: name, URL: slow.URL + "/f", SHA256: up.sha}, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "every artifact ready", func() bool {
		for _, r := range rs[0].m.List() {
			if r.Status != Ready {
				return false
			}
		}
		return true
	})
	if most > 2 {
		t.Errorf("%d transfers at once, Transfers defaults to 2", most)
	}
}
