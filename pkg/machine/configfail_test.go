package machine

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A config that does not render fails the machine from configured (found
// when its installer asks for the first stage, before anything ran) or
// installing; never one that has been installed.
func TestMarkConfigFailed(t *testing.T) {
	now := time.Unix(1000, 0)
	m := New("m1", now, "r0")
	if err := m.MarkConfigFailed("config: bad\x1b[2J", "r1", now); err != nil {
		t.Fatal(err)
	}
	if m.State != Failed || m.FailReason != `config: bad\x1b[2J` || m.History[len(m.History)-1].Reason != m.FailReason || len(m.History) != 2 {
		t.Fatalf("%s %q %+v", m.State, m.FailReason, m.History)
	}
	if err := m.MarkConfigFailed("again", "r1", now); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("failed again: %v", err)
	}
	m = New("m2", now, "r0")
	m.StartInstall("r0", now)
	if err := m.MarkConfigFailed("config: x", "r1", now); err != nil || m.State != Failed {
		t.Fatalf("from installing: %v %s", err, m.State)
	}
	// No config was served: an announcement of installed is not believed
	// (a timeout's failure is: the disk may have been written) until a
	// reinstall.
	var te *TransitionError
	if err := m.MarkInstalled("r1", now); !errors.As(err, &te) || m.State != Failed {
		t.Fatalf("installed after a config failure: %v %s", err, m.State)
	}
	if err := m.Reinstall("r1", now); err != nil || m.ConfigFailed {
		t.Fatalf("reinstall: %v %v", err, m.ConfigFailed)
	}
	m.StartInstall("r0", now)
	m.MarkFailed("install timed out", "r0", now)
	if err := m.MarkInstalled("r1", now); err != nil || m.State != Installed {
		t.Fatalf("a late success after a timeout: %v %s", err, m.State)
	}
	if err := m.MarkConfigFailed("config: x", "r1", now); !errors.As(err, &te) || m.State != Installed {
		t.Fatalf("from installed: %v %s", err, m.State)
	}
	if m := New("m3", now, "r0"); m.MarkConfigFailed(strings.Repeat("x", 1000), "r", now) != nil || len(m.FailReason) > MaxReason {
		t.Fatalf("reason not bounded: %d", len(m.FailReason))
	}
}
