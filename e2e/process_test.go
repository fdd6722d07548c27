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

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// loopbackConfig writes a config for one replica on loopback ports with
// DHCP and TFTP off, and returns its path.
func loopbackConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "process-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.Name, c.Extra = "proc", extra
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
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
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
	cmd.Process.Signal(syscall.SIGTERM)
	if msg := read(); msg != "STOPPING=1" {
		t.Fatalf("on SIGTERM: %q", msg)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, log.String())
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
