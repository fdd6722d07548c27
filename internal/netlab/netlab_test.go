package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStaleOwner(t *testing.T) {
	for _, c := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"mayu-test-4242-3-cli", 4242, true},
		{"mayu-test-4242-3-n1", 4242, true},
		{"mayu-test-4242-3-", 0, false},    // no host part
		{"mayu-test-4242-3", 0, false},     // no host part
		{"mayu-test-04242-3-sw", 0, false}, // not a pid newID writes
		{"mayu-test-x-3-sw", 0, false},
		{"mayu-test--3-sw", 0, false},
		{"mayu-test-4242-0-sw", 0, false},
		{"mayu-test-4242-x-sw", 0, false},
		{"my4242-3-sw", 0, false}, // another prefix
		// newID's names: the pid namespace's field is no pid to a
		// sweep by the bare prefix (an older checkout's).
		{"mayu-test-p4026531836-4242-3-cli", 0, false},
		{"mayu-demo-4242-1-sw", 0, false},
		{"", 0, false},
	} {
		pid, ok := staleOwner(c.name, testPrefix)
		if pid != c.pid || ok != c.ok {
			t.Errorf("staleOwner(%q) = %d, %v; want %d, %v", c.name, pid, ok, c.pid, c.ok)
		}
	}
	// With the prefix newID sweeps by, pid namespace included.
	if pid, ok := staleOwner("mayu-test-p4026531836-4242-3-cli", "mayu-test-p4026531836-"); pid != 4242 || !ok {
		t.Errorf("staleOwner of a name newID made = %d, %v", pid, ok)
	}
}

// A namespace whose process is gone is swept, with what still runs in
// it; one of a live process and one of another prefix are not.
func TestSweepStale(t *testing.T) {
	Require(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", dead)); err == nil {
		t.Skipf("pid %d was reused already", dead)
	}
	prefix := fmt.Sprintf("mayu-sweeptest%d-", os.Getpid())
	stale := fmt.Sprintf("%s%d-1-cli", prefix, dead)
	live := fmt.Sprintf("%s%d-1-cli", prefix, os.Getppid())
	mine := fmt.Sprintf("%s%d-1-cli", prefix, os.Getpid()) // a dead process's with this pid: none of ours yet
	other := fmt.Sprintf("mayu-other%d-%d-1-cli", os.Getpid(), dead)
	for _, ns := range []string{stale, live, other, mine} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	// An orphan in the stale namespace: it goes with it.
	orphan := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- orphan.Wait() }()
	t.Cleanup(func() { orphan.Process.Kill() })
	// Start returns before ip has entered the namespace; a sweep before
	// that finds no pid to kill, and the sleep then runs in the
	// deleted namespace (CI saw it once).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := exec.Command("ip", "netns", "pids", stale).Output()
		if err == nil && len(strings.Fields(string(out))) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan did not enter %s within 10 s", stale)
		}
	}

	sweepStale(prefix)

	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		names[name] = true
	}
	if names[stale] {
		t.Errorf("%s (pid %d is gone) was not swept", stale, dead)
	}
	if !names[live] {
		t.Errorf("%s (a live process's) was swept", live)
	}
	if names[mine] {
		t.Errorf("%s (this process's pid, before it made any) was not swept", mine)
	}
	if !names[other] {
		t.Errorf("%s (another prefix) was swept", other)
	}
	if err := <-exited; err == nil {
		t.Error("the orphan in the stale namespace was not killed")
	}
}
