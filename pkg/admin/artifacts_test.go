package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mayu-boot/mayu/internal/testcert"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/replica"
)

// catalogue is a unit-test stand-in for artifact.Manager.
type catalogue struct {
	mu      sync.Mutex
	records map[string]artifact.Record
	added   []artifact.AddRequest
	who     []string
}

func (c *catalogue) List() []artifact.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []artifact.Record
	for _, r := range c.records {
		out = append(out, r)
	}
	return out
}

func (c *catalogue) Lookup(name string) (artifact.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.records[name]
	return r, ok
}

func (c *catalogue) Holders(sum string) []artifact.Holder {
	return []artifact.Holder{{Replica: "r2", PeerURL: "http://10.0.0.2:4081"}}
}

func (c *catalogue) Progress(name string) []artifact.Progress { return nil }

func (c *catalogue) Add(ctx context.Context, req artifact.AddRequest, who string) (artifact.Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.records[req.Name]; ok {
		return artifact.Record{}, artifact.ErrExists
	}
	if req.URL == "" {
		return artifact.Record{}, fmt.Errorf("%w: url required", artifact.ErrInvalid)
	}
	c.added = append(c.added, req)
	c.who = append(c.who, who)
	r := artifact.Record{Name: req.Name, Status: artifact.Pending, AddedBy: who, Source: artifact.Source{URL: req.URL}}
	c.records[req.Name] = r
	return r, nil
}

func (c *catalogue) Upload(ctx context.Context, name string, body io.Reader, size int64, want, who string) (artifact.Record, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return artifact.Record{}, err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && want != got {
		return artifact.Record{}, fmt.Errorf("%w: got %s, want %s", artifact.ErrDigest, got, want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := artifact.Record{Name: name, SHA256: got, Size: n, Status: artifact.Ready, AddedBy: who, Source: artifact.Source{Uploaded: true}}
	c.records[name] = r
	return r, nil
}

func (c *catalogue) Remove(ctx context.Context, name string, inUse func(string) string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.records[name]; !ok {
		return artifact.ErrNotFound
	}
	if why := inUse(name); why != "" {
		return fmt.Errorf("%w: %s", artifact.ErrInUse, why)
	}
	delete(c.records, name)
	return nil
}

// leaderView is a unit-test stand-in for the replicas' view: the DHCP
// leader publishes a configuration of its own.
type leaderView struct{ published config.Cluster }

func (l leaderView) Replicas(context.Context) ([]replica.Info, error) { return nil, nil }
func (l leaderView) Published(context.Context) (*replica.Published, error) {
	return &replica.Published{Cluster: l.published}, nil
}
func (l leaderView) Leader(context.Context) (string, error) { return "r2", nil }
func (l leaderView) Self() replica.Info                     { return replica.Info{Name: "r1"} }

func newArtifactEnv(t *testing.T) (*httptest.Server, *catalogue, *testfakes.Audit) {
	t.Helper()
	dir := t.TempDir()
	node := config.Node{Admin: config.Admin{TokensFile: filepath.Join(dir, "tokens.yaml")}}
	testcert.WriteFile(t, node.Admin.TokensFile, []byte(tokensYAML))
	keeper, err := NewKeeper(func() (*Credentials, error) { return LoadCredentials(node) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: config.Cluster{
		Install:  config.Install{Image: "artifact:os-1"},
		Profiles: []config.Profile{{Name: "core", Quantity: 1, Install: config.ProfileInstall{Kernel: "artifact:k-1"}}},
	}}
	cat := &catalogue{records: map[string]artifact.Record{
		"os-1": {Name: "os-1", SHA256: strings.Repeat("a", 64), Status: artifact.Ready},
		"k-1":  {Name: "k-1", SHA256: strings.Repeat("b", 64), Status: artifact.Ready},
		"old":  {Name: "old", SHA256: strings.Repeat("c", 64), Status: artifact.Ready},
		"next": {Name: "next", SHA256: strings.Repeat("e", 64), Status: artifact.Ready},
	}}
	trail := testfakes.NewAudit()
	reg := testfakes.NewMachines(cfg.Cluster)
	// Mid-way through a rolling change: the leader's configuration names
	// "next" already.
	leader := leaderView{published: config.Cluster{Install: config.Install{Image: "artifact:next"}}}
	_, h := build(Options{Machines: reg, Replicas: leader, Config: cfg, Credentials: keeper, Audit: trail, Artifacts: cat})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, cat, trail
}

// The artifact routes: add records who added it; an upload is streamed
// and summarised in the audit trail by its size, not its bytes; an
// artifact the configuration names (cluster.install or a profile) cannot
// be removed; names are immutable.
func TestArtifactRoutes(t *testing.T) {
	srv, cat, trail := newArtifactEnv(t)
	client := &api.Client{BaseURL: srv.URL, Token: adminToken}
	ctx := context.Background()

	a, err := client.AddArtifact(ctx, api.AddArtifactRequest{Name: "img-2", URL: "http://up/img", SHA256: strings.Repeat("d", 64)})
	if err != nil || a.Status != artifact.Pending || a.AddedBy != "alice" {
		t.Fatalf("add: %+v %v", a, err)
	}
	if _, err := client.AddArtifact(ctx, api.AddArtifactRequest{Name: "img-2", URL: "http://up/img"}); !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("add a taken name: %v", err)
	}
	if _, err := client.AddArtifact(ctx, api.AddArtifactRequest{Name: "img-3"}); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("add without url: %v", err)
	}

	body := strings.Repeat("image bytes ", 100000)
	sum := sha256.Sum256([]byte(body))
	up, err := client.UploadArtifact(ctx, "img-4", strings.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]))
	if err != nil || up.SHA256 != hex.EncodeToString(sum[:]) || up.Size != int64(len(body)) {
		t.Fatalf("upload: %+v %v", up, err)
	}
	if _, err := client.UploadArtifact(ctx, "img-5", strings.NewReader(body), int64(len(body)), strings.Repeat("0", 64)); !isStatus(err, http.StatusUnprocessableEntity) || !strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("upload with a wrong digest: %v", err)
	}
	if _, err := client.UploadArtifact(ctx, "img-4", strings.NewReader("x"), 1, ""); !isStatus(err, http.StatusConflict) {
		t.Errorf("upload over a taken name: %v", err)
	}
	for _, e := range trail.Entries() {
		if e.Route == "/api/v1/artifacts/{name}" && e.Method == http.MethodPut && (strings.Contains(e.Summary, "image bytes") || !strings.Contains(e.Summary, "bytes uploaded")) {
			t.Errorf("an upload's audit summary: %q", e.Summary)
		}
	}

	for name, key := range map[string]string{"os-1": "cluster.install.image", "k-1": "cluster.profiles[0].install.kernel",
		"next": "the DHCP leader publishes names it in cluster.install.image"} {
		if err := client.RemoveArtifact(ctx, name); !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), key) {
			t.Errorf("remove %s, named by %s: %v", name, key, err)
		}
	}
	if err := client.RemoveArtifact(ctx, "old"); err != nil {
		t.Errorf("remove old: %v", err)
	}
	if err := client.RemoveArtifact(ctx, "old"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("remove old twice: %v", err)
	}
	if err := client.RemoveArtifact(ctx, "../x"); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("remove ../x: %v", err)
	}

	l, err := client.Artifacts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]api.Artifact{}
	for _, a := range l.Artifacts {
		got[a.Name] = a
	}
	if a := got["os-1"]; strings.Join(a.UsedBy, ",") != "cluster.install.image" || len(a.Holders) != 1 {
		t.Errorf("os-1 listed as %+v", a)
	}
	if _, ok := got["old"]; ok || len(cat.added) != 1 {
		t.Errorf("catalogue after the calls: %v, added %v", got, cat.added)
	}
	// A viewer reads, and changes nothing.
	viewer := &api.Client{BaseURL: srv.URL, Token: viewerToken}
	if _, err := viewer.Artifacts(ctx); err != nil {
		t.Errorf("viewer list: %v", err)
	}
	if err := viewer.RemoveArtifact(ctx, "img-4"); !isStatus(err, http.StatusForbidden) {
		t.Errorf("viewer remove: %v", err)
	}
}

func isStatus(err error, code int) bool {
	e, ok := err.(*api.Error)
	return ok && e.Status == code
}
