package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
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

const token = "mayuctl-test-token"

type env struct {
	t         *testing.T
	url       string
	tokenFile string
	reg       *registry.Registry
	etc       *clientv3.Client
}

// start runs the admin API on a real etcd and writes the token file that
// mayuctl reads.
func start(t *testing.T) *env {
	t.Helper()
	// The operator's environment must not leak into the test.
	for _, v := range []string{"MAYU_SERVER", "MAYU_TOKEN", "MAYU_TOKEN_FILE", "MAYU_CACERT", "MAYU_CERT", "MAYU_KEY"} {
		t.Setenv(v, "")
	}
	cfg := &config.Config{
		Node: config.Node{Name: "replica-a"},
		Cluster: config.Cluster{
			Static: config.Static{
				Subnet: netip.MustParsePrefix("10.0.1.0/24"),
				Range:  config.Range{Start: netip.MustParseAddr("10.0.1.10"), End: netip.MustParseAddr("10.0.1.20")},
			},
			Profiles:           []config.Profile{{Name: "core", Quantity: 1, Tags: map[string]string{"rule-core": "true"}}},
			TemplateVars:       map[string]string{"domain": "example.org", "root_password": "hunter2"},
			SecretTemplateVars: []string{"root_password"},
		},
	}
	etc := etcdtest.Start(t)
	reg := registry.New(etc, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cfg.Cluster, Replica: cfg.Node.Name})
	cfg.Node.Etcd.Prefix = etcdtest.Prefix(t)
	srv := httptest.NewServer(admin.New(admin.Options{Machines: reg, Secret: reg, Config: cfg, Token: token,
		Audit:    audit.New(etc, audit.Options{Prefix: etcdtest.Prefix(t), Replica: cfg.Node.Name, MaxEntries: 1000}),
		Leases:   lease.NewStore(etc, state.Keys{Prefix: etcdtest.Prefix(t)}, 0),
		Replicas: replica.New(etc, cfg, replica.Info{}, slog.New(slog.DiscardHandler), nil)}))
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, url: srv.URL, tokenFile: tokenFile, reg: reg, etc: etc}
}

// mayuctl runs the CLI in-process against the test server.
func (e *env) mayuctl(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return runArgs(append([]string{"--server", e.url, "--token-file", e.tokenFile}, args...)...)
}

// mayuctlIn is mayuctl with stdin.
func (e *env) mayuctlIn(stdin string, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return runIn(stdin, append([]string{"--server", e.url, "--token-file", e.tokenFile}, args...)...)
}

func runArgs(args ...string) (int, string, string) {
	return runIn("", args...)
}

func runIn(stdin string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// ok runs mayuctl and fails the test unless it succeeded.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.mayuctl(args...)
	if code != 0 {
		e.t.Fatalf("mayuctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// syncBuffer is a bytes.Buffer that may be read while mayuctl writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// watch starts `mayuctl watch args...` (args must hold a --timeout) and
// returns once it shows changes; wait then gives its exit code and output.
// The admin API subscribes only after it sent its headers, and a change
// made before is never shown: a machine "probe" is added and deleted
// until the watch prints it.
func (e *env) watch(args ...string) (wait func() (code int, stdout, stderr string)) {
	e.t.Helper()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(append([]string{"--server", e.url, "--token-file", e.tokenFile, "watch"}, args...), strings.NewReader(""), &out, &errOut)
	}()
	ctx := context.Background()
	for !strings.Contains(out.String(), "probe") {
		if _, _, err := e.reg.Register(ctx, registry.Registration{ID: "probe"}); err != nil {
			e.t.Fatal(err)
		}
		if err := e.reg.Delete(ctx, "probe"); err != nil {
			e.t.Fatal(err)
		}
		select {
		case code := <-done:
			e.t.Fatalf("watch ended (exit %d) before it showed a change\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return func() (int, string, string) {
		code := <-done
		return code, out.String(), errOut.String()
	}
}

func TestCommands(t *testing.T) {
	e := start(t)
	ctx := context.Background()

	out := e.ok("add", "node-1", "--mac", "52:54:00:00:00:01", "--mac", "52-54-00-00-00-02")
	if !strings.Contains(out, "added node-1: address 10.0.1.10, profile core") {
		t.Errorf("add: %s", out)
	}
	e.ok("add", "--mac", "52:54:00:00:00:03", "node-2") // flags before the id work too

	out = e.ok("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAST BOOT") {
		t.Fatalf("list table:\n%s", out)
	}
	for _, want := range []string{"node-1", "configured", "core", "10.0.1.10", "52:54:00:00:00:01,52:54:00:00:00:02"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("list row %q lacks %q", lines[1], want)
		}
	}

	var l api.MachineList
	if err := json.Unmarshal([]byte(e.ok("list", "-o", "json")), &l); err != nil || len(l.Machines) != 2 || l.Machines[1].ID != "node-2" {
		t.Fatalf("list -o json: %+v %v", l, err)
	}

	// Walk node-1 through an install so that status has history to show.
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("replica-b", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("replica-b", time.Now()) },
		func(m *machine.Machine) error { return m.BootComplete("replica-c", time.Now()) },
	} {
		if _, err := e.reg.Update(ctx, "node-1", step); err != nil {
			t.Fatal(err)
		}
	}
	out = e.ok("set-metadata", "node-1", "role=worker", "zone=b=2")
	if !strings.Contains(out, "role=worker") || !strings.Contains(out, "zone=b=2") {
		t.Errorf("set-metadata: %s", out)
	}
	e.ok("set-metadata", "node-1", "zone=")
	out = e.ok("reinstall", "node-1")
	if !strings.Contains(out, "node-1 is configured (install generation 1)") {
		t.Errorf("reinstall: %s", out)
	}

	out = e.ok("status", "node-1")
	for _, want := range []string{"State:", "configured since", "Address:", "10.0.1.10", "Generation:", "Last boot:", "role", "worker", "rule-core", "History:", "installer started", "replica-b", "boot complete", "replica-c", "reinstall requested", "replica-a"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "zone") {
		t.Errorf("status shows a deleted metadata key:\n%s", out)
	}
	// History newest last; metadata sorted.
	if i, j := strings.Index(out, "registered"), strings.Index(out, "reinstall requested"); i < 0 || j < i {
		t.Errorf("history order:\n%s", out)
	}
	if i, j := strings.Index(out, "role"), strings.Index(out, "rule-core"); j < i {
		t.Errorf("metadata order:\n%s", out)
	}
	var m machine.Machine
	if err := json.Unmarshal([]byte(e.ok("status", "node-1", "-o", "json")), &m); err != nil || m.Generation != 1 || len(m.History) != 5 {
		t.Fatalf("status -o json: %+v %v", m, err)
	}

	out = e.ok("config")
	var v struct {
		Hash    string         `yaml:"hash"`
		Replica string         `yaml:"replica"`
		Cluster config.Cluster `yaml:"cluster"`
	}
	if err := yaml.Unmarshal([]byte(out), &v); err != nil || len(v.Hash) != 64 || v.Replica != "replica-a" ||
		v.Cluster.Static.Range.End != netip.MustParseAddr("10.0.1.20") || v.Cluster.TemplateVars["root_password"] != config.SecretMask {
		t.Errorf("config (yaml): %+v %v\n%s", v, err, out)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("config shows a secret:\n%s", out)
	}
	var cv api.ConfigView
	if err := json.Unmarshal([]byte(e.ok("config", "-o", "json")), &cv); err != nil || cv.Hash != v.Hash {
		t.Errorf("config -o json: %+v %v", cv, err)
	}

	if out = e.ok("delete", "node-2"); !strings.Contains(out, "deleted node-2") {
		t.Errorf("delete: %s", out)
	}
	if out = e.ok("list"); strings.Contains(out, "node-2") {
		t.Errorf("list after delete:\n%s", out)
	}
}

func TestListWarnsAboutCorruptRecords(t *testing.T) {
	e := start(t)
	e.ok("add", "node-1")
	key := etcdtest.Prefix(t) + "machines/broken"
	if _, err := e.etc.Put(context.Background(), key, `{"id":"broken"`); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.mayuctl("list")
	if code != 0 || !strings.Contains(out, "node-1") || strings.Contains(out, "broken") ||
		!strings.Contains(errOut, "warning: record "+key+" in etcd is corrupt") {
		t.Errorf("list: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestErrors(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"unknown machine", []string{"status", "ghost"}, 3, "ghost is not registered"},
		{"malformed id", []string{"status", "A B"}, 1, "not valid"},
		{"bad MAC", []string{"add", "x", "--mac", "nope"}, 1, "MAC address"},
		{"bad metadata key", []string{"set-metadata", "x", "-k=v"}, 2, "unknown shorthand flag: 'k'"},
		{"metadata without =", []string{"set-metadata", "x", "k"}, 2, "not KEY=VALUE"},
		{"missing id", []string{"status"}, 2, "usage: mayuctl status ID"},
		{"two ids", []string{"delete", "a", "b"}, 2, "exactly one machine id"},
		{"bad format", []string{"list", "-o", "xml"}, 2, "unknown output format"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown global flag", []string{"--nope", "list"}, 2, "unknown flag: --nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := e.mayuctl(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, errOut, tc.want)
			}
		})
	}

	// A wrong token: exit 1 and a hint.
	bad := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runArgs("--server", e.url, "--token-file", bad, "list")
	if code != 1 || !strings.Contains(errOut, "the admin token was refused; check --token-file / MAYU_TOKEN") {
		t.Errorf("bad token: exit %d, stderr %q", code, errOut)
	}
	// MAYU_TOKEN is used when no --token-file is given.
	t.Setenv("MAYU_TOKEN", "also-wrong")
	if code, _, errOut := runArgs("--server", e.url, "list"); code != 1 || !strings.Contains(errOut, "token was refused") {
		t.Errorf("bad MAYU_TOKEN: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("MAYU_TOKEN", token)
	t.Setenv("MAYU_SERVER", e.url)
	if code, out, errOut := runArgs("list"); code != 0 || !strings.HasPrefix(out, "ID") {
		t.Errorf("MAYU_SERVER and MAYU_TOKEN: exit %d, %s %s", code, out, errOut)
	}
	t.Setenv("MAYU_TOKEN", "")

	// A missing token file.
	code, _, errOut = runArgs("--server", e.url, "--token-file", filepath.Join(t.TempDir(), "absent"), "list")
	if code != 1 || !strings.Contains(errOut, "cannot read the admin token") {
		t.Errorf("missing token file: exit %d, stderr %q", code, errOut)
	}

	// Nobody listening.
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close()
	code, _, errOut = runArgs("--server", deadURL, "--token-file", e.tokenFile, "list")
	if code != 1 || !strings.Contains(errOut, "cannot reach mayu at "+deadURL) || !strings.Contains(errOut, "set --server or MAYU_SERVER") {
		t.Errorf("unreachable: exit %d, stderr %q", code, errOut)
	}
}

func TestOfflineCommands(t *testing.T) {
	t.Setenv("MAYU_TOKEN_FILE", "/nonexistent") // neither needs a token
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"version"}, 0, "mayuctl " + version},
		{[]string{"help"}, 0, "set-metadata"},
		{[]string{"help", "status"}, 0, "mayuctl status ID [flags]"},
		{[]string{"--help"}, 0, "Exit status:"},
		{[]string{"status", "-h"}, 0, "mayuctl status ID [flags]"},
		{[]string{"--version"}, 0, "mayuctl " + version + "\n"},
	} {
		code, out, errOut := runArgs(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("mayuctl %v: exit %d, stdout %q, stderr %q", tc.args, code, out, errOut)
		}
	}
	if code, _, errOut := runArgs(); code != 2 || !strings.Contains(errOut, "usage: mayuctl COMMAND") {
		t.Errorf("no command: exit %d, %q", code, errOut)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                   "0s",
		42 * time.Second:               "42s",
		3*time.Minute + 12*time.Second: "3m12s",
		5*time.Hour + 3*time.Minute:    "5h3m",
		76 * time.Hour:                 "3d4h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %s, want %s", d, got, want)
		}
	}
}
