package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Segment is one L2 network: a bridge in its own namespace, with hosts
// (each a namespace) plugged into it by veth pairs, like machines on a
// switch. Everything is removed when the test ends.
//
//	netns <id>-sw: br0 ─┬─ veth ── netns <id>-<host>: eth0 <addr>
//	                    └─ ...
type Segment struct {
	*Lab
	Switch string
	hosts  []string
}

// NewSegment creates the bridge namespace.
func NewSegment(t testing.TB) *Segment {
	t.Helper()
	Require(t)
	id := fmt.Sprintf("my%d-%d", os.Getpid()%100000, seq.Add(1))
	s := &Segment{Lab: &Lab{t: t, ID: id}, Switch: id + "-sw"}
	t.Cleanup(s.close)
	s.MustIP("netns", "add", s.Switch)
	s.MustIP("-n", s.Switch, "link", "set", "lo", "up")
	s.MustIP("-n", s.Switch, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
	s.MustIP("-n", s.Switch, "link", "set", "br0", "up")
	return s
}

// AddHost creates namespace <id>-<name> with eth0 on the bridge; addrs
// (CIDR) are assigned to eth0. It returns the namespace's name.
func (s *Segment) AddHost(name string, addrs ...string) string {
	s.t.Helper()
	ns := s.ID + "-" + name
	port := fmt.Sprintf("p%d", len(s.hosts))
	s.MustIP("netns", "add", ns)
	s.hosts = append(s.hosts, ns)
	s.MustIP("-n", s.Switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	s.MustIP("-n", s.Switch, "link", "set", port, "master", "br0", "up")
	s.MustIP("-n", ns, "link", "set", "lo", "up")
	for _, a := range addrs {
		s.MustIP("-n", ns, "addr", "add", a, "dev", "eth0")
	}
	s.MustIP("-n", ns, "link", "set", "eth0", "up")
	return ns
}

func (s *Segment) close() {
	s.Lab.close()
	for _, ns := range append(s.hosts, s.Switch) {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, pid := range splitFields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
}
