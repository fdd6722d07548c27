package e2e

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// depositions counts the depositions logged across the replicas.
func (c *cluster) depositions() (n int, lines []string) {
	for _, r := range c.replicas {
		for _, l := range strings.Split(r.log.String(), "\n") {
			if strings.Contains(l, "DEPOSED the DHCP leader") {
				n++
				lines = append(lines, l)
			}
		}
	}
	return n, lines
}

// depositionsAfter waits up to 5 s for a deposition line not in seen and
// returns the new ones: the line is logged after the deposed leader's
// session is revoked, which may be after the new leader answers. Once one
// came, it reads again a second later, so that a second deposition (by
// another follower, or of the new leader) is among them too.
func (c *cluster) depositionsAfter(seen []string) []string {
	fresh := func() []string {
		_, lines := c.depositions()
		return slices.DeleteFunc(lines, func(l string) bool { return slices.Contains(seen, l) })
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if lines := fresh(); len(lines) > 0 {
			time.Sleep(time.Second)
			return fresh()
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A dead leader is replaced in well under the election TTL (3 s): a
// kill -9 is seen at once (its probes are refused), a frozen leader
// (SIGSTOP) by a majority of the replicas; once thawed, the deposed leader
// never ACKs (its lease writes are fenced) and stops answering. A short
// pause deposes no one.
func TestDeposition(t *testing.T) {
	netlab.Require(t, "curl")
	c := newCluster(t)
	l := c.leader(30 * time.Second)
	p := c.startProber()
	c.waitAnswered(p, time.Now(), c.addrs[l], 10*time.Second)
	time.Sleep(time.Second) // the followers see the leader answer

	// kill -9: refused, deposed by one follower.
	t0 := time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGKILL)
	c.replicas[l].cmd.Wait()
	gap := c.waitAnswered(p, t0, "", 10*time.Second)
	nl := c.leader(5 * time.Second)
	lines := c.depositionsAfter(nil)
	n := len(lines)
	t.Logf("kill -9 of r%d: r%d answers after %s (TTL 3s); %s", l+1, nl+1, gap.Round(time.Millisecond), strings.Join(lines, "; "))
	if n != 1 || !strings.Contains(lines[0], "reason=refused") {
		t.Errorf("%d depositions logged, want one for a refused probe: %v", n, lines)
	}
	// The gap is measured by bench/failover.sh; here only that the
	// deposition, not the TTL, ended the term.
	if gap >= 3*time.Second {
		t.Errorf("failover after kill -9 took %s, not under the 3s TTL", gap)
	}
	c.restartReplica(l)

	// SIGSTOP: its kernel still accepts connections; a majority sees it
	// time out and deposes it.
	l = c.leader(10 * time.Second)
	time.Sleep(2 * time.Second)
	before, seen := c.depositions()
	t0 = time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGSTOP)
	gap = c.waitAnswered(p, t0, "", 10*time.Second)
	nl = c.leader(5 * time.Second)
	// The lines come replica by replica, not in time: the new one is the
	// one not seen before.
	lines = c.depositionsAfter(seen)
	t.Logf("SIGSTOP of r%d: r%d answers after %s; %s", l+1, nl+1, gap.Round(time.Millisecond), strings.Join(lines, "; "))
	if len(lines) != 1 || !strings.Contains(lines[0], "reason=timeout") {
		t.Errorf("%d depositions logged for the frozen leader, want one on timeout: %v", len(lines), lines)
	}
	if gap >= 3*time.Second {
		t.Errorf("failover after SIGSTOP took %s, not under the 3s TTL", gap)
	}
	time.Sleep(time.Second)
	thaw := time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGCONT)
	c.replicas[l].waitLog(t, "lost DHCP leadership", 5*time.Second)
	time.Sleep(2 * time.Second)
	for _, r := range since(p.results(t), thaw) {
		if r.OK && r.Server == c.addrs[l] {
			t.Errorf("the thawed, deposed leader r%d acknowledged %s to %s", l+1, r.IP, r.MAC)
		}
	}
	if got := c.leader(5 * time.Second); got != nl {
		t.Errorf("r%d leads after the thaw, want r%d still (no flapping)", got+1, nl+1)
	}

	// A pause of 150 ms (a GC, a slow disk): nobody is deposed.
	l = nl
	time.Sleep(time.Second)
	before, _ = c.depositions()
	for range 3 {
		c.replicas[l].cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(150 * time.Millisecond)
		c.replicas[l].cmd.Process.Signal(syscall.SIGCONT)
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	if n, lines := c.depositions(); n != before {
		t.Errorf("a leader paused for 150 ms was deposed: %v", lines[before:])
	}
	if got := c.leader(5 * time.Second); got != l {
		t.Errorf("r%d leads after the pauses, want r%d", got+1, l+1)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	all := p.results(t)
	if err := dhcpprobe.CheckUnique(all); err != nil {
		t.Error(err)
	}
}
