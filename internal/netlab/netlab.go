// Package netlab builds throw-away networks: network namespaces joined by
// veth pairs or a bridge, created by their caller and removed by it, so
// that real DHCP servers and clients exchange real packets without ever
// touching the machine's own interfaces.
//
//	netns <id>-srv: srv0 10.99.0.1/24        (mayu, etcd)
//	  └── veth ──── netns <id>-cli: cli0      (udhcpc, perfdhcp, curl, atftp)
//
// Constructors take the function that registers a cleanup (a test's
// t.Cleanup, a program's list of deferred cleanups, see Cleanups) and
// return errors; NewT and NewSegmentT are the same for tests, failing the
// test on error (testing.go).
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Lab is one pair of namespaces, or the switch of a Segment, and the
// processes started in them.
type Lab struct {
	ID  string
	Srv string // server namespace (New only)
	Cli string // client namespace (New only)

	mu     sync.Mutex
	procs  []*exec.Cmd
	closed bool
	extra  []string // more namespaces to remove (a Segment's)
}

var seq atomic.Int32

// Check returns an error unless this process runs as root and has
// iproute2 and tools: creating namespaces needs both.
func Check(tools ...string) error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
	return nil
}

// testPrefix starts the names of New's and NewSegment's namespaces.
const testPrefix = "mayu-test-"

// newID is unique per process and lab: namespace names start with it,
// <prefix>p<pid namespace>-<pid>-<n>. The first lab of a process with a
// prefix removes what processes of its pid namespace with the same
// prefix left behind when they died (sweepStale): a pid names a process
// only within its pid namespace, and /run/netns may be shared with
// another one (a container's).
func newID(prefix string) string {
	// "p<inode>": a name a sweep by <prefix><pid>-<n>-… does not parse.
	ns, known := pidNamespace()
	prefix += "p" + ns + "-"
	if known { // else /proc cannot tell whose process is gone either
		swept.Do(prefix, func() { sweepStale(prefix) })
	}
	return fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// pidNamespace is the inode number of this process's pid namespace, and
// whether it could be read ("0" if not).
func pidNamespace() (string, bool) {
	link, err := os.Readlink("/proc/self/ns/pid") // "pid:[4026531836]"
	if err != nil {
		return "0", false
	}
	ino := strings.TrimSuffix(strings.TrimPrefix(link, "pid:["), "]")
	if _, err := strconv.ParseUint(ino, 10, 64); err != nil {
		return "0", false
	}
	return ino, true
}

// swept runs each prefix's sweep once per process.
var swept onceByKey

type onceByKey struct {
	mu   sync.Mutex
	done map[string]bool
}

func (o *onceByKey) Do(key string, fn func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done[key] {
		return
	}
	if o.done == nil {
		o.done = map[string]bool{}
	}
	o.done[key] = true
	fn()
}

// sweepStale deletes the namespaces named <prefix><pid>-<n>-… (prefix
// naming this process's pid namespace) whose process pid is gone: a test binary killed (a timeout, a CI runner
// stopping it) never ran its cleanups, and its namespaces, empty or
// holding its orphans (an etcd, a DHCP server), would stay forever. A
// namespace of a live process, or one whose name does not parse, is left
// alone; a pid reused since only delays its sweep.
func sweepStale(prefix string) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, ok := staleOwner(name, prefix)
		if !ok {
			continue
		}
		// A live process's own cleanup removes its namespaces. This
		// process has made none with this prefix yet: one with its pid
		// is a dead one's whose pid came round again.
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil && pid != os.Getpid() {
			continue
		}
		killAndDelete(name)
	}
}

// staleOwner returns the pid in a namespace name made by newID(prefix).
func staleOwner(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) < 3 || parts[2] == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 || strconv.Itoa(pid) != parts[0] {
		return 0, false
	}
	if n, err := strconv.Atoi(parts[1]); err != nil || n <= 0 {
		return 0, false
	}
	return pid, true
}

// killAndDelete kills what runs in namespace ns and deletes it; it tries
// the delete twice, and says on stderr when it failed: a namespace left
// behind is a leak to see, not to hide.
func killAndDelete(ns string) error {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			exec.Command("kill", "-9", pid).Run()
		}
	}
	var err error
	for try := 0; try < 2; try++ {
		var out []byte
		if out, err = exec.Command("ip", "netns", "del", ns).CombinedOutput(); err == nil {
			return nil
		}
		if !netnsExists(ns) {
			return nil // never made (a failed constructor), or another sweep's
		}
		err = fmt.Errorf("ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out))
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "netlab: %v\n", err)
	return err
}

// netnsExists reports whether `ip netns list` names ns (true if it
// cannot tell).
func netnsExists(ns string) bool {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); name == ns {
			return true
		}
	}
	return false
}

// New creates the namespaces and the veth between them; srvAddr is the
// server side's address (CIDR), e.g. 10.99.0.1/24. cleanup registers the
// lab's removal (Close); on error everything made so far is removed
// already.
func New(cleanup func(func()), srvAddr string) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	id := newID(testPrefix)
	l := &Lab{ID: id, Srv: id + "-srv", Cli: id + "-cli"}
	err := l.ipAll([][]string{
		{"netns", "add", l.Srv},
		{"netns", "add", l.Cli},
		// Created inside the namespaces: the root namespace never sees them.
		{"-n", l.Srv, "link", "add", "srv0", "type", "veth", "peer", "name", "cli0", "netns", l.Cli},
		{"-n", l.Srv, "addr", "add", srvAddr, "dev", "srv0"},
		{"-n", l.Srv, "link", "set", "lo", "up"},
		{"-n", l.Cli, "link", "set", "lo", "up"},
		{"-n", l.Srv, "link", "set", "srv0", "up"},
		{"-n", l.Cli, "link", "set", "cli0", "up"},
	})
	if err != nil {
		l.Close()
		return nil, err
	}
	cleanup(l.Close)
	return l, nil
}

// IP runs `ip args...`.
func (l *Lab) IP(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *Lab) ipAll(cmds [][]string) error {
	for _, args := range cmds {
		if err := l.IP(args...); err != nil {
			return err
		}
	}
	return nil
}

// SetClientMAC gives cli0 another MAC, to pose as another machine.
func (l *Lab) SetClientMAC(mac string) error {
	return l.ipAll([][]string{
		{"-n", l.Cli, "link", "set", "cli0", "down"},
		{"-n", l.Cli, "link", "set", "cli0", "address", mac},
		{"-n", l.Cli, "link", "set", "cli0", "up"},
	})
}

// Command prepares a command inside namespace ns (`ip netns exec` execs
// it: the process id is the command's).
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

// Start starts a long-running command in ns; Close stops it. Its output
// collects in the returned Output.
func (l *Lab) Start(ns, name string, args ...string) (*exec.Cmd, *Output, error) {
	cmd := l.Command(context.Background(), ns, name, args...)
	out := &Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := l.StartCmd(cmd); err != nil {
		return nil, nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	return cmd, out, nil
}

// StartCmd starts cmd (made with Command, its output set by the caller)
// and stops it on Close, as Start does.
func (l *Lab) StartCmd(cmd *exec.Cmd) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("the lab is closed")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	l.procs = append(l.procs, cmd)
	return nil
}

// Close stops what the lab started (SIGINT, SIGKILL after 5 s), kills
// everything else left in its namespaces, then deletes them. Later calls
// do nothing.
func (l *Lab) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
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
	for _, ns := range append([]string{l.Cli, l.Srv}, l.extra...) {
		if ns != "" {
			killAndDelete(ns)
		}
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
