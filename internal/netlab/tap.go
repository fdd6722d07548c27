package netlab

// AddTap creates a tap device on the segment's bridge, for a virtual
// machine: run qemu in s.Switch with -netdev tap,ifname=<name>. Like
// everything on the segment it lives in the switch namespace and goes
// when the test ends.
func (s *Segment) AddTap(name string) {
	s.t.Helper()
	s.MustIP("-n", s.Switch, "tuntap", "add", "dev", name, "mode", "tap")
	s.MustIP("-n", s.Switch, "link", "set", name, "master", "br0", "up")
}
