package netlab

import "os/exec"

// TB is the part of testing.TB the test wrappers use (netlab itself does
// not import package testing: programs use it too).
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// Require skips the test unless it runs as root with iproute2 and tools.
func Require(t TB, tools ...string) {
	t.Helper()
	if err := Check(tools...); err != nil {
		t.Skip(err.Error())
	}
}

// TLab is a Lab for a test: removed when the test ends, every error fails
// the test.
type TLab struct {
	*Lab
	t TB
}

// NewT is New for a test.
func NewT(t TB, srvAddr string) *TLab {
	t.Helper()
	Require(t)
	l, err := New(t.Cleanup, srvAddr)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return &TLab{Lab: l, t: t}
}

// MustIP runs `ip args...` and fails the test on error.
func (l *TLab) MustIP(args ...string) {
	l.t.Helper()
	if err := l.IP(args...); err != nil {
		l.t.Fatalf("%v", err)
	}
}

// SetClientMAC is Lab.SetClientMAC, failing the test on error.
func (l *TLab) SetClientMAC(mac string) {
	l.t.Helper()
	if err := l.Lab.SetClientMAC(mac); err != nil {
		l.t.Fatalf("%v", err)
	}
}

// Start is Lab.Start, failing the test on error.
func (l *TLab) Start(ns, name string, args ...string) (*exec.Cmd, *Output) {
	l.t.Helper()
	cmd, out, err := l.Lab.Start(ns, name, args...)
	if err != nil {
		l.t.Fatalf("%v", err)
	}
	return cmd, out
}

// TSegment is a Segment for a test: removed when the test ends, every
// error fails the test.
type TSegment struct {
	*TLab
	Seg    *Segment
	Switch string
}

// NewSegmentT is NewSegment for a test.
func NewSegmentT(t TB) *TSegment {
	t.Helper()
	Require(t)
	s, err := NewSegment(t.Cleanup)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return &TSegment{TLab: &TLab{Lab: s.Lab, t: t}, Seg: s, Switch: s.Switch}
}

// AddHost is Segment.AddHost, failing the test on error.
func (s *TSegment) AddHost(name string, addrs ...string) string {
	s.t.Helper()
	ns, err := s.Seg.AddHost(name, addrs...)
	if err != nil {
		s.t.Fatalf("%v", err)
	}
	return ns
}

// AddTap is Segment.AddTap, failing the test on error.
func (s *TSegment) AddTap(name string) {
	s.t.Helper()
	if err := s.Seg.AddTap(name); err != nil {
		s.t.Fatalf("%v", err)
	}
}
