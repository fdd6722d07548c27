package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/pkg/config"
)

// loopbackConfig writes a config for one replica on loopback ports with
// DHCP and TFTP off, and returns its path.
func loopbackConfig(t *testing.T, extra string) string {
	t.Helper()
	return loopbackConfigWith(t, func(c *fixture.Config) { c.Name, c.Extra = "proc", extra })
}

// loopbackConfigWith is loopbackConfig changed by edit.
func loopbackConfigWith(t *testing.T, edit func(*fixture.Config)) string {
	t.Helper()
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "process-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(&c)
	path, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// systemd runs mayu as Type=notify: READY=1 must come once etcd and the
// listeners are up, STOPPING=1 on SIGTERM. systemd is not PID 1 here, so
// the test plays its part: a datagram socket in NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(bins.mayu, "-config", loopbackConfig(t, ""))
	// The watchdog: fed three times per interval while the replica
	// answers its health check.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=600000")
	// Written by exec's copying goroutine while the test reads it.
	var log netlab.Output
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	read := func() string {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, log.String())
		}
		return string(buf[:n])
	}
	if msg := read(); msg != "READY=1" {
		t.Fatalf("first notification %q", msg)
	}
	// mayu logs "mayu started" before it notifies, but the log line
	// crosses a pipe and a copying goroutine, the notification does not:
	// give the line a moment to arrive.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "mayu started"); {
		if time.Now().After(deadline) {
			t.Fatalf("READY=1 came before mayu started:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		if msg := read(); msg != "WATCHDOG=1" {
			t.Fatalf("after READY=1: %q", msg)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	msg := read()
	for msg == "WATCHDOG=1" { // one may be on its way
		msg = read()
	}
	if msg != "STOPPING=1" {
		t.Fatalf("on SIGTERM: %q", msg)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, log.String())
	}
	// A clean start and stop, embedded etcd included, logs no error and
	// no stack trace.
	if out := log.String(); strings.Contains(out, "level=ERROR") || strings.Contains(out, "goroutine ") || strings.Contains(out, "stacktrace") {
		t.Errorf("a clean start and stop logged errors:\n%s", out)
	}
}

func TestBadConfigStopsStartWithTheKeyNamed(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	for name, c := range map[string]struct {
		extra string
		want  string
	}{
		"typo":      {"  registraton: open\n", `unknown key "registraton"`},
		"bad value": {"  registration: sometimes\n", "cluster.registration"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(bins.mayu, "-config", loopbackConfig(t, c.extra)).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
				t.Fatalf("exit %v, output:\n%s", err, out)
			}
		})
	}
	out, err := exec.Command(bins.mayu, "-check", "-config", loopbackConfig(t, "")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Fatalf("-check: %v\n%s", err, out)
	}
}

// `mayu -check` finds what start would refuse, every problem at once, each
// with its key: a missing tokens file, install file and template, a DHCP
// interface that does not exist. Start refuses the same config.
func TestCheckListsEveryProblem(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	// A DHCP port (high, and on an interface that does not exist: nothing
	// could ever answer) so that -check looks at the interface.
	path := loopbackConfigWith(t, func(c *fixture.Config) {
		c.Name, c.Interface, c.Ports.DHCP = "check", "mayu-nosuch0", 16767
	})
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tokens := cfg.Node.AdminTokenFile
	for _, f := range []string{
		filepath.Join(cfg.Node.FilesDir, cfg.Cluster.Install.Kernel),
		filepath.Join(cfg.Node.FilesDir, cfg.Cluster.Templates.FinalConfig),
		tokens,
	} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(bins.mayu, "-check", "-config", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("-check: %v\n%s", err, out)
	}
	for _, want := range []string{"cluster.install.kernel", "cluster.templates.final_config", tokens, `node.interface "mayu-nosuch0"`, "4 problems", "under node.files_dir"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(bins.mayu, "-config", path).CombinedOutput(); err == nil {
		t.Errorf("start accepted what -check refused:\n%s", out)
	}
}

// `mayu -check -etcd` reaches etcd as start would: an endpoint that does
// not answer fails, named; one that does passes unless an artifact the
// configuration names is missing from the catalogue.
func TestCheckEtcd(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	etcd := etcdtest.StartServer(t)
	run := func(endpoint, image string) (string, error) {
		path := loopbackConfigWith(t, func(c *fixture.Config) { c.Name, c.Etcd, c.Image = "check", []string{endpoint}, image })
		out, err := exec.Command(bins.mayu, "-check", "-etcd", "-config", path).CombinedOutput()
		return string(out), err
	}
	if out, err := run(etcd.ClientURL, ""); err != nil || !strings.Contains(out, "etcd: ["+etcd.ClientURL+"] answers") {
		t.Errorf("etcd up: %v\n%s", err, out)
	}
	if out, err := run(etcd.ClientURL, "artifact:os-image"); err == nil || !strings.Contains(out, `artifact "os-image" is not in the catalogue`) {
		t.Errorf("artifact missing: %v\n%s", err, out)
	}
	if out, err := run("http://127.0.0.1:1", ""); err == nil || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("etcd down: %v\n%s", err, out)
	}
}
