// Package netlab builds throw-away networks for tests: network namespaces
// joined by veth pairs, created by the test and removed by it, so that
// real DHCP servers and clients exchange real packets without ever
// touching the machine's own interfaces.
//
//	netns <id>-srv: srv0 10.99.0.1/24        (mayu, etcd)
//	  └── veth ──── netns <id>-cli: cli0      (udhcpc, perfdhcp, curl, atftp)
package netlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Lab is one pair of namespaces.
type Lab struct {
	t   testing.TB
	ID  string
	Srv string // server namespace
	Cli string // client namespace

	mu    sync.Mutex
	procs []*exec.Cmd
}

var seq atomic.Int32

// Require skips the test unless it runs as root with iproute2: creating
// namespaces needs both.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make test installs it)", tool)
		}
	}
}

// New creates the namespaces and the veth between them; srvAddr is the
// server side's address (CIDR), e.g. 10.99.0.1/24. Everything is removed
// when the test ends.
func New(t testing.TB, srvAddr string) *Lab {
	t.Helper()
	Require(t)
	id := fmt.Sprintf("my%d-%d", os.Getpid()%100000, seq.Add(1))
	l := &Lab{t: t, ID: id, Srv: id + "-srv", Cli: id + "-cli"}
	t.Cleanup(l.close)
	l.MustIP("netns", "add", l.Srv)
	l.MustIP("netns", "add", l.Cli)
	// Created inside the namespaces: the root namespace never sees them.
	l.MustIP("-n", l.Srv, "link", "add", "srv0", "type", "veth", "peer", "name", "cli0", "netns", l.Cli)
	l.MustIP("-n", l.Srv, "addr", "add", srvAddr, "dev", "srv0")
	for _, ns := range []string{l.Srv, l.Cli} {
		l.MustIP("-n", ns, "link", "set", "lo", "up")
	}
	l.MustIP("-n", l.Srv, "link", "set", "srv0", "up")
	l.MustIP("-n", l.Cli, "link", "set", "cli0", "up")
	return l
}

// MustIP runs `ip args...` and fails the test on error.
func (l *Lab) MustIP(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// SetClientMAC gives cli0 another MAC, to pose as another machine.
func (l *Lab) SetClientMAC(mac string) {
	l.t.Helper()
	l.MustIP("-n", l.Cli, "link", "set", "cli0", "down")
	l.MustIP("-n", l.Cli, "link", "set", "cli0", "address", mac)
	l.MustIP("-n", l.Cli, "link", "set", "cli0", "up")
}

// Command prepares a command inside namespace ns.
func (l *Lab) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs a command in ns to completion and returns its combined output.
func (l *Lab) Run(timeout time.Duration, ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := l.Command(ctx, ns, name, args...).CombinedOutput()
	return string(out), err
}

// Start starts a long-running command in ns; it is stopped when the test
// ends. Its output collects in the returned Output.
func (l *Lab) Start(ns, name string, args ...string) (*exec.Cmd, *Output) {
	l.t.Helper()
	cmd := l.Command(context.Background(), ns, name, args...)
	out := &Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start %s in %s: %v", name, ns, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	return cmd, out
}

// close kills what the lab started and everything else left in its
// namespaces, then deletes them.
func (l *Lab) close() {
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		if p.Process != nil {
			p.Process.Signal(os.Interrupt)
		}
	}
	for _, p := range procs {
		waitOrKill(p, 5*time.Second)
	}
	for _, ns := range []string{l.Cli, l.Srv} {
		if ns == "" {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, pid := range splitFields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

func waitOrKill(p *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		p.Process.Kill()
		<-done
	}
}

// Output is a process's output, safe to read while it runs.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func splitFields(s string) []string { return strings.Fields(s) }
