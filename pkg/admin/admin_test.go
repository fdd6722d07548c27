package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/audit"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/replica"
	"github.com/mayu-boot/mayu/pkg/state"
)

const token = "s3cret-admin-token"

// testConfig has a static range of three addresses, one "core" slot and a
// secret template variable.
func testConfig() *config.Config {
	return &config.Config{
		Node: config.Node{Name: "replica-a"},
		Cluster: config.Cluster{
			Static: config.Static{
				Subnet: netip.MustParsePrefix("10.0.1.0/24"),
				Range:  config.Range{Start: netip.MustParseAddr("10.0.1.10"), End: netip.MustParseAddr("10.0.1.12")},
			},
			Profiles:           []config.Profile{{Name: "core", Quantity: 1, Tags: map[string]string{"rule-core": "true"}}},
			TemplateVars:       map[string]string{"domain": "example.org", "root_password": "hunter2"},
			SecretTemplateVars: []string{"root_password"},
		},
	}
}

type env struct {
	srv   *httptest.Server
	etc   *clientv3.Client // nil on the fakes
	reg   admin.Machines
	cfg   *config.Config
	trail *testfakes.Audit // nil on etcd
}

// start serves the admin API on in-memory fakes: the handler's own rules,
// without etcd (the registry is tested on etcd in its own package).
func start(t *testing.T) *env {
	t.Helper()
	cfg := testConfig()
	reg := testfakes.NewMachines(cfg.Cluster)
	reg.ReplicaName = cfg.Node.Name
	trail := testfakes.NewAudit()
	srv := httptest.NewServer(admin.New(admin.Options{Machines: reg, Secret: reg, Config: cfg, Token: token, Leases: testfakes.NewLeases(), Audit: trail}))
	t.Cleanup(srv.Close)
	return &env{srv: srv, reg: reg, cfg: cfg, trail: trail}
}

// startEtcd serves it on a real etcd, for what only etcd shows: corrupt
// records, lease keys, an outage.
func startEtcd(t *testing.T) *env {
	t.Helper()
	return startWith(t, etcdtest.Start(t), 0)
}

func startWith(t *testing.T, cli *clientv3.Client, timeout time.Duration) *env {
	t.Helper()
	cfg := testConfig()
	cfg.Node.Etcd.Prefix = etcdtest.Prefix(t)
	reg := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cfg.Cluster, Replica: cfg.Node.Name, Timeout: timeout})
	srv := httptest.NewServer(admin.New(admin.Options{Machines: reg, Secret: reg, Config: cfg, Token: token,
		Audit:    audit.New(cli, audit.Options{Prefix: etcdtest.Prefix(t), Replica: cfg.Node.Name, Timeout: timeout, MaxEntries: 1000}),
		Leases:   lease.NewStore(cli, state.Keys{Prefix: etcdtest.Prefix(t)}, timeout),
		Replicas: replica.New(cli, cfg, replica.Info{}, slog.New(slog.DiscardHandler), nil)}))
	t.Cleanup(srv.Close)
	return &env{srv: srv, etc: cli, reg: reg, cfg: cfg}
}

// call makes a request with the right token and returns status and body.
func (e *env) call(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	return e.callAs(t, "Bearer "+token, method, path, body)
}

func (e *env) callAs(t *testing.T, auth, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return resp.StatusCode, data
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// wantError checks the status and that the error message mentions want.
func wantError(t *testing.T, what string, code int, data []byte, wantCode int, want string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("%s: status %d, want %d; body %s", what, code, wantCode, data)
	}
	msg := decode[api.ErrorBody](t, data).Error
	if !strings.Contains(msg, want) {
		t.Errorf("%s: error %q does not mention %q", what, msg, want)
	}
}

func TestAuthentication(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name, auth, method, path string
	}{
		{"no token", "", "GET", "/api/v1/machines"},
		{"wrong token", "Bearer nope", "GET", "/api/v1/machines"},
		{"token prefix", "Bearer " + token[:5], "GET", "/api/v1/machines"},
		{"token with suffix", "Bearer " + token + "x", "GET", "/api/v1/machines"},
		{"basic scheme", "Basic " + token, "GET", "/api/v1/machines"},
		{"bare token", token, "GET", "/api/v1/machines"},
		{"empty bearer", "Bearer ", "GET", "/api/v1/machines"},
		{"mutation", "", "DELETE", "/api/v1/machines/x"},
		{"config", "", "GET", "/api/v1/config"},
		{"unknown route", "", "GET", "/nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.callAs(t, tc.auth, tc.method, tc.path, "")
			wantError(t, tc.name, code, data, http.StatusUnauthorized, "Authorization: Bearer")
		})
	}
	// The scheme is case-insensitive (RFC 6750).
	if code, data := e.callAs(t, "bearer "+token, "GET", "/api/v1/machines", ""); code != http.StatusOK {
		t.Errorf("lower-case scheme: status %d: %s", code, data)
	}
}

func TestEmptyTokenRefusesEverything(t *testing.T) {
	cfg := testConfig()
	reg := registry.New(etcdtest.Start(t), registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cfg.Cluster, Replica: "r"})
	srv := httptest.NewServer(admin.New(admin.Options{Machines: reg, Config: cfg, Token: ""}))
	defer srv.Close()
	e := &env{srv: srv}
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		code, data := e.callAs(t, auth, "GET", "/api/v1/machines", "")
		wantError(t, "auth "+auth, code, data, http.StatusUnauthorized, "no admin token configured")
	}
}

func TestMachineLifecycle(t *testing.T) {
	e := start(t)
	ctx := context.Background()

	code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"srv-01","macs":["52-54-00-12-34-56","52:54:00:12:34:56","525400abcdef"]}`)
	if code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, data)
	}
	m := decode[machine.Machine](t, data)
	if m.ID != "srv-01" || m.State != machine.Configured || m.InternalAddr != "10.0.1.10" || m.Profile != "core" ||
		!m.Preregistered || m.Metadata["rule-core"] != "true" || len(m.MachineID) != 32 {
		t.Errorf("added machine: %+v", m)
	}
	// MACs are normalised and de-duplicated.
	if got := strings.Join(m.MACs, ","); got != "52:54:00:12:34:56,52:54:00:ab:cd:ef" {
		t.Errorf("MACs %s", got)
	}

	code, data = e.call(t, "GET", "/api/v1/machines/srv-01", "")
	if got := decode[machine.Machine](t, data); code != http.StatusOK || got.MachineID != m.MachineID {
		t.Fatalf("get: %d %s", code, data)
	}

	code, data = e.call(t, "GET", "/api/v1/machines", "")
	l := decode[api.MachineList](t, data)
	if code != http.StatusOK || len(l.Machines) != 1 || l.Machines[0].ID != "srv-01" || l.Corrupt == nil || len(l.Corrupt) != 0 {
		t.Fatalf("list: %d %s", code, data)
	}

	// Reinstalling a configured machine changes nothing and succeeds.
	code, data = e.call(t, "POST", "/api/v1/machines/srv-01/reinstall", "")
	if got := decode[machine.Machine](t, data); code != http.StatusOK || got.Generation != 0 || len(got.History) != 1 {
		t.Fatalf("reinstall of a configured machine: %d %s", code, data)
	}
	// Install it, then ask for a reinstall.
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("replica-b", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("replica-b", time.Now()) },
		func(m *machine.Machine) error { return m.BootComplete("replica-b", time.Now()) },
	} {
		if _, err := e.reg.Update(ctx, "srv-01", step); err != nil {
			t.Fatal(err)
		}
	}
	code, data = e.call(t, "POST", "/api/v1/machines/srv-01/reinstall", "")
	m = decode[machine.Machine](t, data)
	last := m.History[len(m.History)-1]
	if code != http.StatusOK || m.State != machine.Configured || m.Generation != 1 ||
		last.State != machine.Configured || last.Replica != "replica-a" || last.Reason != "reinstall requested" {
		t.Fatalf("reinstall: %d %s", code, data)
	}

	code, data = e.call(t, "POST", "/api/v1/machines/srv-01/metadata", `{"role":"worker","rack/row":"b.2"}`)
	m = decode[machine.Machine](t, data)
	if code != http.StatusOK || m.Metadata["role"] != "worker" || m.Metadata["rack/row"] != "b.2" || m.Metadata["rule-core"] != "true" {
		t.Fatalf("set metadata: %d %s", code, data)
	}
	code, data = e.call(t, "POST", "/api/v1/machines/srv-01/metadata", `{"role":"","absent":""}`)
	m = decode[machine.Machine](t, data)
	if _, ok := m.Metadata["role"]; code != http.StatusOK || ok || m.Metadata["rack/row"] != "b.2" {
		t.Fatalf("delete metadata: %d %s", code, data)
	}
	if stored, err := e.reg.Get(ctx, "srv-01"); err != nil || stored.Metadata["rack/row"] != "b.2" || stored.Metadata["role"] != "" {
		t.Fatalf("metadata in etcd: %+v %v", stored, err)
	}

	code, data = e.call(t, "DELETE", "/api/v1/machines/srv-01", "")
	if got := decode[api.Deleted](t, data); code != http.StatusOK || got.ID != "srv-01" {
		t.Fatalf("delete: %d %s", code, data)
	}
	code, data = e.call(t, "GET", "/api/v1/machines/srv-01", "")
	wantError(t, "get after delete", code, data, http.StatusNotFound, "srv-01 is not registered")
	// The MACs are free again.
	code, data = e.call(t, "POST", "/api/v1/machines", `{"id":"srv-02","macs":["52:54:00:12:34:56"]}`)
	if code != http.StatusCreated {
		t.Fatalf("add with a freed MAC: %d %s", code, data)
	}
}

func TestMalformedID(t *testing.T) {
	e := start(t)
	for _, id := range []string{"../x", "A B", "Upper", "-lead", "x/y", strings.Repeat("a", 65), "..", "a\x00b"} {
		path := "/api/v1/machines/" + url.PathEscape(id)
		for _, r := range []struct{ method, path, body string }{
			{"GET", path, ""},
			{"DELETE", path, ""},
			{"POST", path + "/reinstall", ""},
			{"POST", path + "/metadata", `{"a":"b"}`},
		} {
			code, data := e.call(t, r.method, r.path, r.body)
			wantError(t, r.method+" "+r.path, code, data, http.StatusBadRequest, "not valid")
		}
		body, _ := json.Marshal(api.AddRequest{ID: id})
		code, data := e.call(t, "POST", "/api/v1/machines", string(body))
		wantError(t, "add "+id, code, data, http.StatusBadRequest, "not valid")
	}
	// Nothing reached the registry.
	if ms, _, err := e.reg.List(context.Background()); err != nil || len(ms) != 0 {
		t.Errorf("the registry holds %v (%v)", ms, err)
	}
}

func TestUnknownMachine(t *testing.T) {
	e := start(t)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/v1/machines/ghost", ""},
		{"DELETE", "/api/v1/machines/ghost", ""},
		{"POST", "/api/v1/machines/ghost/reinstall", ""},
		{"POST", "/api/v1/machines/ghost/metadata", `{"a":"b"}`},
	} {
		code, data := e.call(t, r.method, r.path, r.body)
		wantError(t, r.method+" "+r.path, code, data, http.StatusNotFound, "mayuctl list")
	}
	code, data := e.call(t, "GET", "/api/v2/whatever", "")
	wantError(t, "unknown route", code, data, http.StatusNotFound, "/api/v1/")
	code, data = e.call(t, "PUT", "/api/v1/machines/ghost", "")
	wantError(t, "wrong method", code, data, http.StatusMethodNotAllowed, "PUT")
}

func TestAddConflicts(t *testing.T) {
	e := start(t)
	add := func(body string) (int, []byte) { return e.call(t, "POST", "/api/v1/machines", body) }
	if code, data := add(`{"id":"a1","macs":["52:54:00:00:00:01"]}`); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, data)
	}
	code, data := add(`{"id":"a1"}`)
	wantError(t, "add existing", code, data, http.StatusConflict, "already registered")
	code, data = add(`{"id":"a2","macs":["52:54:00:00:00:01"]}`)
	wantError(t, "MAC taken", code, data, http.StatusConflict, "already belongs to machine a1")
	code, data = add(`{"id":"a2","macs":["52:54:00:zz:00:01"]}`)
	wantError(t, "bad MAC", code, data, http.StatusBadRequest, "MAC address")

	// The range holds three addresses.
	for _, id := range []string{"a2", "a3"} {
		if code, data := add(`{"id":"` + id + `"}`); code != http.StatusCreated {
			t.Fatalf("add %s: %d %s", id, code, data)
		}
	}
	code, data = add(`{"id":"a4"}`)
	wantError(t, "exhausted", code, data, http.StatusConflict, "exhausted")
}

func TestDeleteFreesAddress(t *testing.T) {
	e := start(t)
	var first machine.Machine
	for _, id := range []string{"d1", "d2"} {
		code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"`+id+`"}`)
		if code != http.StatusCreated {
			t.Fatalf("add %s: %d %s", id, code, data)
		}
		if id == "d1" {
			first = decode[machine.Machine](t, data)
		}
	}
	if code, data := e.call(t, "DELETE", "/api/v1/machines/d1", ""); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, data)
	}
	code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"d1"}`)
	again := decode[machine.Machine](t, data)
	if code != http.StatusCreated || again.InternalAddr != first.InternalAddr || again.Profile != first.Profile {
		t.Fatalf("add again: %d %s; first had %s/%s", code, data, first.InternalAddr, first.Profile)
	}
	// A fresh registration, not the old record.
	if again.MachineID == first.MachineID {
		t.Error("machine id survived the delete")
	}
}

func TestCorruptRecord(t *testing.T) {
	e := startEtcd(t)
	key := etcdtest.Prefix(t) + "machines/broken"
	if _, err := e.etc.Put(context.Background(), key, "{not json"); err != nil {
		t.Fatal(err)
	}
	if code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"good"}`); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, data)
	}
	code, data := e.call(t, "GET", "/api/v1/machines", "")
	l := decode[api.MachineList](t, data)
	if code != http.StatusOK || len(l.Machines) != 1 || l.Machines[0].ID != "good" ||
		len(l.Corrupt) != 1 || l.Corrupt[0].Key != key || !strings.Contains(l.Corrupt[0].Error, "etcdctl get "+key) {
		t.Fatalf("list: %d %s", code, data)
	}
	code, data = e.call(t, "GET", "/api/v1/machines/broken", "")
	wantError(t, "get corrupt", code, data, http.StatusInternalServerError, "is corrupt")
	// The remedy the message names works.
	if code, data := e.call(t, "DELETE", "/api/v1/machines/broken", ""); code != http.StatusOK {
		t.Fatalf("delete corrupt: %d %s", code, data)
	}
	code, data = e.call(t, "GET", "/api/v1/machines", "")
	if l := decode[api.MachineList](t, data); code != http.StatusOK || len(l.Corrupt) != 0 {
		t.Fatalf("list after delete: %d %s", code, data)
	}
}

func TestBadBodies(t *testing.T) {
	e := start(t)
	if code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"b1"}`); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, data)
	}
	for _, tc := range []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"unknown field", "/api/v1/machines", `{"id":"b2","mac":["52:54:00:00:00:01"]}`, 400, `unknown field "mac"`},
		{"no body", "/api/v1/machines", "", 400, "JSON body"},
		{"not JSON", "/api/v1/machines", `id=b2`, 400, "not valid"},
		{"two values", "/api/v1/machines", `{"id":"b2"} {"id":"b3"}`, 400, "after the JSON value"},
		{"too large", "/api/v1/machines", `{"id":"b2","macs":["` + strings.Repeat("a", 70<<10) + `"]}`, 413, "larger than"},
		{"metadata not strings", "/api/v1/machines/b1/metadata", `{"a":1}`, 400, "not valid"},
		{"metadata empty", "/api/v1/machines/b1/metadata", `{}`, 400, "sets no metadata"},
		{"metadata bad key", "/api/v1/machines/b1/metadata", `{"-x":"1"}`, 400, "metadata key"},
		{"metadata key with space", "/api/v1/machines/b1/metadata", `{"a b":"1"}`, 400, "metadata key"},
		{"metadata key too long", "/api/v1/machines/b1/metadata", `{"` + strings.Repeat("k", 64) + `":"1"}`, 400, "metadata key"},
		{"metadata value too long", "/api/v1/machines/b1/metadata", `{"k":"` + strings.Repeat("v", 1025) + `"}`, 400, "at most 1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.call(t, "POST", tc.path, tc.body)
			wantError(t, tc.name, code, data, tc.code, tc.want)
		})
	}
	// The longest key and value allowed are accepted.
	body := `{"` + strings.Repeat("k", 63) + `":"` + strings.Repeat("v", 1024) + `"}`
	if code, data := e.call(t, "POST", "/api/v1/machines/b1/metadata", body); code != http.StatusOK {
		t.Fatalf("longest metadata: %d %s", code, data)
	}
}

func TestConfigHidesSecrets(t *testing.T) {
	e := start(t)
	code, data := e.call(t, "GET", "/api/v1/config", "")
	if code != http.StatusOK {
		t.Fatalf("config: %d %s", code, data)
	}
	if strings.Contains(string(data), "hunter2") || !strings.Contains(string(data), `"<secret>"`) {
		t.Fatalf("config shows a secret, or not its mask: %s", data)
	}
	v := decode[api.ConfigView](t, data)
	if v.Hash != e.cfg.ClusterHash() || v.Replica != "replica-a" ||
		v.Cluster.TemplateVars["root_password"] != config.SecretMask || v.Cluster.TemplateVars["domain"] != "example.org" ||
		v.Cluster.Static.Range.End != netip.MustParseAddr("10.0.1.12") {
		t.Errorf("config: %s", data)
	}
	// Showing the config leaves the replica's own copy intact.
	if e.cfg.Cluster.TemplateVars["root_password"] != "hunter2" {
		t.Error("the replica's config was redacted in place")
	}
}

func TestEtcdDown(t *testing.T) {
	s := etcdtest.StartServer(t)
	// The add (several fsynced writes) gets the default timeout; only the
	// calls made with etcd down get the short one.
	if code, data := startWith(t, s.Client, 0).call(t, "POST", "/api/v1/machines", `{"id":"e1"}`); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, data)
	}
	e := startWith(t, s.Client, 300*time.Millisecond)
	s.Stop()
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/v1/machines", ""},
		{"GET", "/api/v1/machines/e1", ""},
		{"POST", "/api/v1/machines", `{"id":"e2"}`},
		{"POST", "/api/v1/machines/e1/reinstall", ""},
		{"DELETE", "/api/v1/machines/e1", ""},
	} {
		code, data := e.call(t, r.method, r.path, r.body)
		wantError(t, r.method+" "+r.path, code, data, http.StatusServiceUnavailable, "etcd")
	}
}

func TestClient(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	c := &api.Client{BaseURL: e.srv.URL + "/", Token: token}

	m, err := c.Add(ctx, "c1", []string{"52:54:00:00:00:0c"})
	if err != nil || m.ID != "c1" {
		t.Fatalf("Add: %+v %v", m, err)
	}
	if m, err = c.Get(ctx, "c1"); err != nil || m.MACs[0] != "52:54:00:00:00:0c" {
		t.Fatalf("Get: %+v %v", m, err)
	}
	if m, err = c.SetMetadata(ctx, "c1", map[string]string{"k": "v"}); err != nil || m.Metadata["k"] != "v" {
		t.Fatalf("SetMetadata: %+v %v", m, err)
	}
	if m, err = c.Reinstall(ctx, "c1"); err != nil || m.State != machine.Configured {
		t.Fatalf("Reinstall: %+v %v", m, err)
	}
	l, err := c.List(ctx)
	if err != nil || len(l.Machines) != 1 {
		t.Fatalf("List: %+v %v", l, err)
	}
	v, err := c.Config(ctx)
	if err != nil || v.Hash != e.cfg.ClusterHash() || v.Cluster.Profiles[0].Name != "core" {
		t.Fatalf("Config: %+v %v", v, err)
	}
	if err := c.Delete(ctx, "c1", false); err != nil {
		t.Fatalf("Delete: %v", err)
	}

	// Errors carry the server's status and message.
	var apiErr *api.Error
	if _, err := c.Get(ctx, "c1"); !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "c1 is not registered") {
		t.Errorf("Get deleted: %v", err)
	}
	if _, err := c.Get(ctx, "../../config"); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("Get ../../config: %v", err)
	}
	bad := &api.Client{BaseURL: e.srv.URL, Token: "wrong"}
	if _, err := bad.List(ctx); !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Errorf("wrong token: %v", err)
	}
	// Something that is not mayu answers.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if _, err := (&api.Client{BaseURL: other.URL, Token: token}).List(ctx); !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "404") {
		t.Errorf("not mayu: %v", err)
	}
}

// Every change is in the audit trail in etcd, with who made it and from
// where, and stays there when the machine is deleted.
func TestAuditTrailOnEtcd(t *testing.T) {
	e := startEtcd(t)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/machines", `{"id":"srv-01","macs":["52:54:00:00:00:01"]}`},
		{"POST", "/api/v1/machines/srv-01/metadata", `{"rack":"r7"}`},
		{"POST", "/api/v1/machines/srv-01/reinstall", ""},
		{"POST", "/api/v1/machines", `{"id":"srv-02"}`},
		{"DELETE", "/api/v1/machines/srv-01?force=true", ""},
	} {
		if code, data := e.call(t, c.method, c.path, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, data)
		}
	}
	if code, _ := e.call(t, "GET", "/api/v1/machines/srv-01", ""); code != http.StatusNotFound {
		t.Fatalf("srv-01 not deleted: %d", code)
	}
	code, data := e.call(t, "GET", "/api/v1/audit?machine=srv-01", "")
	if code != http.StatusOK {
		t.Fatalf("audit: %d %s", code, data)
	}
	l := decode[api.AuditList](t, data)
	var got []string
	for _, en := range l.Entries {
		got = append(got, fmt.Sprintf("%s %s %d", en.Method, en.Route, en.Status))
		if en.Who != "admin" || en.Via != api.ViaToken || en.Role != api.RoleAdmin || !strings.HasPrefix(en.Remote, "127.0.0.1:") ||
			en.Replica != "replica-a" || en.Machine != "srv-01" || time.Since(en.Time) > time.Minute {
			t.Errorf("entry %+v", en)
		}
	}
	want := []string{"DELETE /api/v1/machines/{id} 200", "POST /api/v1/machines/{id}/reinstall 200",
		"POST /api/v1/machines/{id}/metadata 200", "POST /api/v1/machines 201"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("audit of srv-01, newest first:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l.Entries[2].Summary != `{"rack":"r7"}` || l.Entries[0].Summary != "?force=true" {
		t.Errorf("summaries %q, %q", l.Entries[2].Summary, l.Entries[0].Summary)
	}
	code, data = e.call(t, "GET", "/api/v1/audit?limit=2", "")
	if l := decode[api.AuditList](t, data); code != http.StatusOK || len(l.Entries) != 2 || l.Entries[0].Method != "DELETE" {
		t.Errorf("limit 2: %d %s", code, data)
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=10001", "machine=..%2F"} {
		code, data := e.call(t, "GET", "/api/v1/audit?"+q, "")
		wantError(t, q, code, data, http.StatusBadRequest, "")
	}
	// The entries are in etcd, under the audit key space.
	resp, err := e.etc.Get(context.Background(), state.Keys{Prefix: etcdtest.Prefix(t)}.Audit(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 5 {
		t.Fatalf("%v entries in etcd: %v", resp.Count, err)
	}
}

// With etcd down, a change is refused (it could not be recorded) with a
// clear error.
func TestChangeRefusedWhenAuditCannotBeWritten(t *testing.T) {
	srv := etcdtest.StartServer(t)
	e := startWith(t, srv.Client, 500*time.Millisecond)
	srv.Stop()
	code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"srv-09"}`)
	wantError(t, "add without etcd", code, data, http.StatusServiceUnavailable, "the change was not made: its audit record could not be written")
}
