package netlab

import "fmt"

// Segment is one L2 network: a bridge in its own namespace, with hosts
// (each a namespace) plugged into it by veth pairs, like machines on a
// switch, and taps for virtual machines. Close removes all of it.
//
//	netns <id>-sw: br0 ─┬─ veth ── netns <id>-<host>: eth0 <addr>
//	                    ├─ ...
//	                    └─ tap0 ── qemu
type Segment struct {
	*Lab
	Switch string
	hosts  int
}

// NewSegment creates the bridge namespace; cleanup registers its removal
// (Close), with every host's.
func NewSegment(cleanup func(func())) (*Segment, error) {
	return newSegment(cleanup, testPrefix)
}

// NewSegmentNamed is NewSegment with namespaces named
// <prefix>p<pid namespace>-<pid>-<n>-…, so that a program's namespaces are
// told apart from the tests'. The prefix must be the program's own: the
// first segment sweeps every namespace so named whose process is gone.
func NewSegmentNamed(cleanup func(func()), prefix string) (*Segment, error) {
	return newSegment(cleanup, prefix)
}

func newSegment(cleanup func(func()), prefix string) (*Segment, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	id := newID(prefix)
	s := &Segment{Lab: &Lab{ID: id}, Switch: id + "-sw"}
	s.extra = []string{s.Switch}
	err := s.ipAll([][]string{
		{"netns", "add", s.Switch},
		{"-n", s.Switch, "link", "set", "lo", "up"},
		{"-n", s.Switch, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"-n", s.Switch, "link", "set", "br0", "up"},
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	cleanup(s.Close)
	return s, nil
}

// AddHost creates namespace <id>-<name> with eth0 on the bridge; addrs
// (CIDR) are assigned to eth0. It returns the namespace's name.
func (s *Segment) AddHost(name string, addrs ...string) (string, error) {
	ns := s.ID + "-" + name
	port := fmt.Sprintf("p%d", s.hosts)
	s.hosts++
	if err := s.IP("netns", "add", ns); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.extra = append([]string{ns}, s.extra...) // hosts go before the switch
	s.mu.Unlock()
	cmds := [][]string{
		{"-n", s.Switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", s.Switch, "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	for _, a := range addrs {
		cmds = append(cmds, []string{"-n", ns, "addr", "add", a, "dev", "eth0"})
	}
	cmds = append(cmds, []string{"-n", ns, "link", "set", "eth0", "up"})
	return ns, s.ipAll(cmds)
}

// AddTap creates a tap device on the bridge, for a virtual machine: run
// qemu in s.Switch with -netdev tap,ifname=<name>. Like everything on the
// segment it lives in the switch namespace and goes with it.
func (s *Segment) AddTap(name string) error {
	return s.ipAll([][]string{
		{"-n", s.Switch, "tuntap", "add", "dev", name, "mode", "tap"},
		{"-n", s.Switch, "link", "set", name, "master", "br0", "up"},
	})
}
