package vmlab

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/netlab"
)

// sampleIgnition is an Ignition 3.3 config of the shape mayu's shipped
// template (final_config_format: ignition) renders: hostname, a networkd
// file for the static address, metadata, the boot-complete URLs (0600),
// SSH keys for core, and an enabled unit that POSTs boot-complete.
func sampleIgnition(hostname, mac, addr, gateway, sshKey, bootComplete string) []byte {
	data := func(s string) map[string]any { return map[string]any{"source": "data:," + url.PathEscape(s)} }
	file := func(path string, mode int, content string) map[string]any {
		return map[string]any{"path": path, "mode": mode, "overwrite": true, "contents": data(content)}
	}
	unit := `[Unit]
Description=Report boot-complete to mayu
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'while :; do for u in $$(cat /etc/mayu/boot-complete); do curl -fsS --connect-timeout 5 --max-time 20 -X POST "$$u" >/dev/null && exit 0; done; sleep 5; done'

[Install]
WantedBy=multi-user.target
`
	cfg := map[string]any{
		"ignition": map[string]any{"version": "3.3.0"},
		"passwd":   map[string]any{"users": []any{map[string]any{"name": "core", "sshAuthorizedKeys": []string{sshKey}}}},
		"storage": map[string]any{"files": []any{
			file("/etc/hostname", 0o644, hostname+"\n"),
			file("/etc/systemd/network/00-mayu.network", 0o644,
				"[Match]\nMACAddress="+mac+"\n\n[Network]\nAddress="+addr+"\nGateway="+gateway+"\nDNS="+gateway+"\n"),
			file("/etc/mayu/metadata", 0o644, "rule-core=true\n"),
			file("/etc/mayu/boot-complete", 0o600, bootComplete+"\n"),
		}},
		"systemd": map[string]any{"units": []any{map[string]any{"name": "mayu-boot-complete.service", "enabled": true, "contents": unit}}},
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		panic(err)
	}
	return out
}

// The sample is a config the real Ignition's validator accepts: what the
// VM test below feeds the OS is the real thing.
func TestSampleIgnitionValidates(t *testing.T) {
	if _, err := exec.LookPath("ignition-validate"); err != nil {
		t.Skip("no ignition-validate (package ignition)")
	}
	f := filepath.Join(t.TempDir(), "config.ign")
	if err := os.WriteFile(f, sampleIgnition("h", "52:54:00:00:00:01", "10.0.0.2/24", "10.0.0.1", "ssh-ed25519 AAAA k", "http://x/"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ignition-validate", f).CombinedOutput(); err != nil {
		t.Fatalf("ignition-validate: %v\n%s", err, out)
	}
}

// The test OS is configured by the real Ignition on its first boot: the
// OS image boots straight from its disk (no network boot, no mayu), with
// an Ignition config placed on its boot partition where mayu's installer
// puts the final config. Ignition runs from the initramfs, the root's
// systemd brings the network up from the networkd file Ignition wrote,
// and the unit Ignition enabled POSTs boot-complete to a web server on
// the lab segment. What Ignition wrote is then read from the disk. The
// second boot skips Ignition and still reports.
func TestVMOSRunsIgnition(t *testing.T) {
	if testing.Short() {
		t.Skip("VM boots take minutes: skipped with -short")
	}
	netlab.Require(t, "busybox", "curl")
	if miss := append(MissingForBuild(), MissingForBoot(BIOS)...); len(miss) > 0 {
		t.Skipf("needs %s", strings.Join(miss, ", "))
	}
	cache := os.Getenv("MAYU_VMLAB_CACHE")
	if cache == "" {
		cache, _ = filepath.Abs("../../.work/vmlab")
	}
	dir := t.TempDir()
	t0 := time.Now()
	b, err := BuildAll(t.Context(), cache, filepath.Join(dir, "build"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(b.Path(ImageFile))
	t.Logf("built in %s (OS image %s, %d MiB)", time.Since(t0).Round(time.Second), b.ImageTime.Round(time.Second), st.Size()>>20)

	seg := netlab.NewSegmentT(t)
	srv := seg.AddHost("srv", "10.99.0.1/24")
	seg.AddTap("tap0")
	// The boot-complete endpoint: busybox httpd runs a CGI that records
	// each request.
	www := filepath.Join(dir, "www")
	requests := filepath.Join(dir, "requests")
	if err := os.MkdirAll(filepath.Join(www, "cgi-bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	cgi := "#!/bin/sh\necho \"$REQUEST_METHOD $QUERY_STRING\" >>" + requests + "\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n"
	if err := os.WriteFile(filepath.Join(www, "cgi-bin", "boot-complete"), []byte(cgi), 0o755); err != nil {
		t.Fatal(err)
	}
	seg.Start(srv, "busybox", "httpd", "-f", "-p", "10.99.0.1:8080", "-h", www)

	const (
		mac      = "52:54:00:00:05:31"
		addr     = "10.99.0.31"
		hostname = "0123abcd4567ef89"
		sshKey   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMayuTestKey core@mayu-test"
	)
	// Two replicas, the first of which does not answer: the unit tries
	// the next.
	urls := "http://10.99.0.9:8080/cgi-bin/boot-complete?token=t0 http://10.99.0.1:8080/cgi-bin/boot-complete?token=t1"
	disk := filepath.Join(dir, "disk.raw")
	if err := copyFile(b.Path(ImageFile), disk); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "final-config")
	if err := os.WriteFile(config, sampleIgnition(hostname, mac, addr+"/24", "10.99.0.1", sshKey, strings.ReplaceAll(urls, " ", "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	part := disk + "@@" + "1048576"
	for _, c := range [][]string{{"mmd", "-i", part, "::/mayu"}, {"mcopy", "-i", part, config, "::/mayu/final-config"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}

	boot := func(n int) *VM {
		// FirmwarePXE with SeaBIOS: no iPXE ROM, so no network boot; the
		// disk boots at once.
		v, err := StartVM(VMConfig{Name: "ign", Netns: seg.Switch, Tap: "tap0", MAC: mac, Serial: "IGN-0001",
			Firmware: BIOS, FirmwarePXE: true, Disk: disk, Dir: filepath.Join(dir, "vm"+string(rune('0'+n))),
			FailOn: regexp.MustCompile(`MAYU-OS: FAILED|Kernel panic`)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			v.Stop()
			if t.Failed() {
				t.Logf("serial console, boot %d (last 120 lines):\n%s", n, v.Tail(120))
			}
		})
		return v
	}
	step := func(v *VM, within time.Duration, pattern string) Line {
		t.Helper()
		l, err := v.Expect(within, pattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%7.1fs  %s", l.At.Seconds(), l.Text)
		return l
	}
	waitRequest := func(token string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			if data, _ := os.ReadFile(requests); strings.Contains(string(data), "POST token="+token) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		data, _ := os.ReadFile(requests)
		t.Fatalf("no POST with token %s reached the web server; it got:\n%s", token, data)
	}

	v := boot(1)
	step(v, 2*time.Minute, `MAYU-OS: ignition: first boot, running Ignition (Debian )?2\.\d+`)
	step(v, time.Minute, `MAYU-OS: ignition fetch-offline stage done`)
	step(v, time.Minute, `MAYU-OS: ignition files stage done`)
	step(v, time.Minute, `MAYU-OS: switching to the root file system`)
	step(v, 3*time.Minute, `MAYU-OS: up: hostname=`+hostname+` addresses=.*:`+regexp.QuoteMeta(addr)+`/24`)
	waitRequest("t1")
	t.Logf("%7.1fs  the unit Ignition enabled reported boot-complete", v.Since().Seconds())
	if out, err := seg.Run(10*time.Second, srv, "busybox", "ping", "-c", "1", "-W", "2", addr); err != nil {
		t.Errorf("the OS's static address %s does not answer ping: %v\n%s", addr, err, out)
	}
	v.Stop()

	root, err := OpenRootFS(t.Context(), disk, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path      string
		mode      os.FileMode
		uid       int
		want      string
		substring bool
	}{
		{"/etc/hostname", 0o644, 0, hostname + "\n", false},
		{"/etc/systemd/network/00-mayu.network", 0o644, 0, "MACAddress=" + mac + "\n\n[Network]\nAddress=" + addr + "/24\nGateway=10.99.0.1\n", true},
		{"/etc/mayu/metadata", 0o644, 0, "rule-core=true\n", false},
		{"/etc/mayu/boot-complete", 0o600, 0, "token=t1", true},
		{"/home/core/.ssh/authorized_keys.d/ignition", 0o600, 500, sshKey + "\n", false},
		{"/etc/systemd/system-preset/20-ignition.preset", 0o644, 0, "enable mayu-boot-complete.service\n", false},
	} {
		f, err := root.File(c.path)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := string(f.Data); (c.substring && !strings.Contains(got, c.want)) || (!c.substring && got != c.want) {
			t.Errorf("%s holds %q, want %q", c.path, got, c.want)
		}
		if f.Mode != c.mode || f.UID != c.uid {
			t.Errorf("%s: mode %o uid %d, want %o uid %d", c.path, f.Mode, f.UID, c.mode, c.uid)
		}
	}

	// systemd applied Ignition's preset on the first boot: the unit that
	// reported is the one Ignition enabled.
	wants := "/etc/systemd/system/multi-user.target.wants/mayu-boot-complete.service"
	if target, err := root.Link(wants); err != nil || target != "/etc/systemd/system/mayu-boot-complete.service" {
		t.Errorf("%s → %q, %v", wants, target, err)
	}

	t.Log("boot 2: Ignition does not run again; the enabled unit reports again")
	if err := os.Remove(requests); err != nil {
		t.Fatal(err)
	}
	v = boot(2)
	step(v, 2*time.Minute, `MAYU-OS: ignition: not the first boot`)
	step(v, 3*time.Minute, `MAYU-OS: up: hostname=`+hostname+` `)
	waitRequest("t1")
	for _, l := range v.Lines() {
		if strings.Contains(l.Text, "running Ignition") {
			t.Errorf("Ignition ran on the second boot: %s", l)
		}
	}
}
