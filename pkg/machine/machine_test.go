package machine

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns a machine in state s, built through the real transitions.
func at(t *testing.T, s State) *Machine {
	t.Helper()
	m := New("sn0001", t0, "r0")
	m.MachineID = strings.Repeat("ab", 16)
	now := t0
	step := func(f func() error) {
		t.Helper()
		now = now.Add(time.Minute)
		if err := f(); err != nil {
			t.Fatalf("building a %s machine: %v", s, err)
		}
	}
	switch s {
	case Configured:
	case Installing:
		step(func() error { return m.StartInstall("r0", now) })
	case Installed:
		step(func() error { return m.StartInstall("r0", now) })
		step(func() error { return m.MarkInstalled("r0", now) })
	case Running:
		step(func() error { return m.StartInstall("r0", now) })
		step(func() error { return m.MarkInstalled("r0", now) })
		step(func() error { return m.BootComplete("r0", now) })
	case Failed:
		step(func() error { return m.StartInstall("r0", now) })
		step(func() error { return m.MarkFailed("disk /dev/sda not found", "r0", now) })
	default:
		t.Fatalf("unknown state %q", s)
	}
	if m.State != s {
		t.Fatalf("built a %s machine, want %s", m.State, s)
	}
	return m
}

func TestNew(t *testing.T) {
	m := New("sn0001", t0, "r1")
	if m.State != Configured || !m.Since.Equal(t0) || !m.Registered.Equal(t0) {
		t.Fatalf("new machine: %+v", m)
	}
	if m.ProfileSlot != -1 || m.Metadata == nil || m.Generation != 0 {
		t.Fatalf("new machine: %+v", m)
	}
	if len(m.History) != 1 || m.History[0].State != Configured || m.History[0].Replica != "r1" {
		t.Fatalf("new machine history: %+v", m.History)
	}
	if m.HasBeenInstalled() {
		t.Fatal("a new machine has been installed")
	}
}

func TestTransitions(t *testing.T) {
	type op func(m *Machine, now time.Time) error
	start := func(m *Machine, now time.Time) error { return m.StartInstall("r2", now) }
	installed := func(m *Machine, now time.Time) error { return m.MarkInstalled("r2", now) }
	failed := func(m *Machine, now time.Time) error { return m.MarkFailed("wipefs: device busy", "r2", now) }
	boot := func(m *Machine, now time.Time) error { return m.BootComplete("r2", now) }
	reinstall := func(m *Machine, now time.Time) error { return m.Reinstall("r2", now) }

	tests := []struct {
		name    string
		from    State
		op      op
		to      State
		err     string // "" success, "unchanged", or a substring of the TransitionError
		genStep int    // expected Generation change
	}{
		{name: "configured→installing", from: Configured, op: start, to: Installing},
		{name: "installing→installed", from: Installing, op: installed, to: Installed},
		{name: "installed→running", from: Installed, op: boot, to: Running},
		{name: "installing→failed", from: Installing, op: failed, to: Failed},
		{name: "failed→installed (late success)", from: Failed, op: installed, to: Installed},
		{name: "reinstall running", from: Running, op: reinstall, to: Configured, genStep: 1},
		{name: "reinstall installed", from: Installed, op: reinstall, to: Configured, genStep: 1},
		{name: "reinstall failed", from: Failed, op: reinstall, to: Configured, genStep: 1},
		{name: "reinstall installing", from: Installing, op: reinstall, to: Configured, genStep: 1},

		{name: "installer retry", from: Installing, op: start, err: "unchanged"},
		{name: "installed twice", from: Installed, op: installed, err: "unchanged"},
		{name: "failed twice", from: Failed, op: failed, err: "unchanged"},
		{name: "reinstall configured", from: Configured, op: reinstall, err: "unchanged"},

		{name: "installed never reinstalls", from: Installed, op: start, err: "mayuctl reinstall sn0001"},
		{name: "running never reinstalls", from: Running, op: start, err: "is running and cannot become installing"},
		{name: "failed needs reinstall", from: Failed, op: start, err: "cannot become installing"},
		{name: "configured cannot be installed", from: Configured, op: installed, err: "is configured and cannot become installed"},
		{name: "running cannot be installed", from: Running, op: installed, err: "cannot become installed"},
		{name: "configured cannot fail", from: Configured, op: failed, err: "cannot become failed"},
		{name: "installed cannot fail", from: Installed, op: failed, err: "cannot become failed"},
		{name: "running cannot fail", from: Running, op: failed, err: "cannot become failed"},
		{name: "configured boot-complete", from: Configured, op: boot, err: "only an installed machine reports boot-complete"},
		{name: "installing boot-complete", from: Installing, op: boot, err: "cannot become running"},
		{name: "failed boot-complete", from: Failed, op: boot, err: "cannot become running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := at(t, tt.from)
			before := *m
			beforeHist := len(m.History)
			now := t0.Add(time.Hour)
			err := tt.op(m, now)
			switch tt.err {
			case "":
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if m.State != tt.to || !m.Since.Equal(now) || m.LastReplica != "r2" {
					t.Fatalf("after %s: state %s since %v by %q", tt.name, m.State, m.Since, m.LastReplica)
				}
				if len(m.History) != beforeHist+1 {
					t.Fatalf("history grew by %d, want 1", len(m.History)-beforeHist)
				}
				last := m.History[len(m.History)-1]
				if last.State != tt.to || !last.At.Equal(now) || last.Replica != "r2" || last.Reason == "" {
					t.Fatalf("last event %+v", last)
				}
				if m.Generation != before.Generation+tt.genStep {
					t.Fatalf("generation %d → %d, want +%d", before.Generation, m.Generation, tt.genStep)
				}
				if tt.to == Failed {
					if m.FailReason != "wipefs: device busy" || last.Reason != m.FailReason {
						t.Fatalf("fail reason %q, event reason %q", m.FailReason, last.Reason)
					}
				} else if m.FailReason != "" {
					t.Fatalf("fail reason %q kept in %s", m.FailReason, m.State)
				}
				if m.HasBeenInstalled() != (tt.to == Installed || tt.to == Running) {
					t.Fatalf("HasBeenInstalled() = %v in %s", m.HasBeenInstalled(), m.State)
				}
			case "unchanged":
				if !errors.Is(err, ErrUnchanged) {
					t.Fatalf("%s: err = %v, want ErrUnchanged", tt.name, err)
				}
				if m.State != before.State || len(m.History) != beforeHist || m.Generation != before.Generation || !m.Since.Equal(before.Since) {
					t.Fatalf("%s changed the machine", tt.name)
				}
			default:
				var te *TransitionError
				if !errors.As(err, &te) {
					t.Fatalf("%s: err = %v (%T), want *TransitionError", tt.name, err, err)
				}
				if te.ID != "sn0001" || te.From != tt.from {
					t.Fatalf("TransitionError %+v", te)
				}
				if !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "machine sn0001") {
					t.Fatalf("message %q does not contain %q", err, tt.err)
				}
				if m.State != before.State || len(m.History) != beforeHist || m.Generation != before.Generation {
					t.Fatalf("a refused transition changed the machine")
				}
			}
		})
	}
}

func TestFullLifecycle(t *testing.T) {
	m := New("sn0001", t0, "r0")
	now := t0
	tick := func() time.Time { now = now.Add(time.Minute); return now }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.StartInstall("r1", tick()))
	must(m.MarkInstalled("r2", tick()))
	must(m.BootComplete("r3", tick()))
	firstBoot := now
	if !m.LastBoot.Equal(firstBoot) || m.State != Running {
		t.Fatalf("after first boot: %s, LastBoot %v", m.State, m.LastBoot)
	}
	hist := len(m.History)
	since := m.Since

	// A reboot: boot-complete again updates LastBoot without a history entry.
	must(m.BootComplete("r1", tick()))
	if !m.LastBoot.Equal(now) || m.LastBoot.Equal(firstBoot) {
		t.Fatalf("LastBoot %v not updated", m.LastBoot)
	}
	if len(m.History) != hist || !m.Since.Equal(since) || m.State != Running || m.LastReplica != "r1" {
		t.Fatalf("reboot: history %d→%d, since %v→%v, state %s, replica %s", hist, len(m.History), since, m.Since, m.State, m.LastReplica)
	}

	must(m.Reinstall("r0", tick()))
	if m.Generation != 1 || m.State != Configured {
		t.Fatalf("after reinstall: gen %d, state %s", m.Generation, m.State)
	}
	must(m.StartInstall("r0", tick()))
	must(m.MarkFailed("timeout", "r0", tick()))
	must(m.Reinstall("r0", tick()))
	if m.Generation != 2 {
		t.Fatalf("generation %d, want 2", m.Generation)
	}
	want := []State{Configured, Installing, Installed, Running, Configured, Installing, Failed, Configured}
	if len(m.History) != len(want) {
		t.Fatalf("history %+v", m.History)
	}
	for i, e := range m.History {
		if e.State != want[i] {
			t.Fatalf("history[%d] = %s, want %s", i, e.State, want[i])
		}
		if i > 0 && !e.At.After(m.History[i-1].At) {
			t.Fatalf("history out of order at %d", i)
		}
	}
}

func TestHistoryCapped(t *testing.T) {
	m := New("sn0001", t0, "r0")
	now := t0
	for i := 0; i < 200; i++ {
		now = now.Add(time.Second)
		if err := m.StartInstall("r0", now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		if err := m.Reinstall("r0", now); err != nil {
			t.Fatal(err)
		}
		if len(m.History) > historyLimit {
			t.Fatalf("history has %d entries, limit %d", len(m.History), historyLimit)
		}
	}
	if len(m.History) != 50 {
		t.Fatalf("history has %d entries, want 50", len(m.History))
	}
	// The newest events are kept, oldest first.
	last := m.History[len(m.History)-1]
	if !last.At.Equal(now) || last.State != Configured {
		t.Fatalf("newest event %+v, want configured at %v", last, now)
	}
	if first := m.History[0]; !first.At.Equal(now.Add(-49 * time.Second)) {
		t.Fatalf("oldest kept event at %v, want %v", first.At, now.Add(-49*time.Second))
	}
	if m.Generation != 200 {
		t.Fatalf("generation %d, want 200", m.Generation)
	}
}

func TestInstallExpired(t *testing.T) {
	const timeout = 30 * time.Minute
	inst := at(t, Installing) // installing since t0+1m
	since := inst.Since
	tests := []struct {
		m    *Machine
		now  time.Time
		want bool
	}{
		{inst, since, false},
		{inst, since.Add(timeout), false},
		{inst, since.Add(timeout + time.Nanosecond), true},
		{inst, since.Add(48 * time.Hour), true},
		{at(t, Configured), t0.Add(48 * time.Hour), false},
		{at(t, Installed), t0.Add(48 * time.Hour), false},
		{at(t, Running), t0.Add(48 * time.Hour), false},
		{at(t, Failed), t0.Add(48 * time.Hour), false},
	}
	for i, tt := range tests {
		if got := tt.m.InstallExpired(timeout, tt.now); got != tt.want {
			t.Errorf("%d: %s machine since %v, InstallExpired at %v = %v, want %v", i, tt.m.State, tt.m.Since, tt.now, got, tt.want)
		}
	}
}

func TestHasMAC(t *testing.T) {
	m := New("sn0001", t0, "r0")
	m.MACs = []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}
	if !m.HasMAC("52:54:00:12:34:57") || m.HasMAC("52:54:00:12:34:58") {
		t.Fatal("HasMAC is wrong")
	}
}

func TestCheck(t *testing.T) {
	good := func() *Machine {
		m := New("sn0001", t0, "r0")
		m.MachineID = "0123456789abcdef0123456789abcdef"
		return m
	}
	if err := good().Check("sn0001"); err != nil {
		t.Fatalf("a good record: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Machine)
		id     string
		want   string
	}{
		{"id mismatch", func(m *Machine) {}, "sn0002", `record holds id "sn0001"`},
		{"empty id", func(m *Machine) { m.ID = "" }, "sn0001", `record holds id ""`},
		{"unknown state", func(m *Machine) { m.State = "exploded" }, "sn0001", `unknown state "exploded"`},
		{"empty state", func(m *Machine) { m.State = "" }, "sn0001", `unknown state ""`},
		{"short machineID", func(m *Machine) { m.MachineID = "abc" }, "sn0001", "not 32 hex digits"},
		{"missing machineID", func(m *Machine) { m.MachineID = "" }, "sn0001", "not 32 hex digits"},
		{"long machineID", func(m *Machine) { m.MachineID += "0" }, "sn0001", "not 32 hex digits"},
		{"non-hex machineID", func(m *Machine) { m.MachineID = "../../../../../../../../../etc/x" }, "sn0001", "not 32 hex digits"},
		{"upper-case machineID", func(m *Machine) { m.MachineID = strings.ToUpper(m.MachineID) }, "sn0001", "not 32 hex digits"},
	}
	for _, tt := range tests {
		m := good()
		tt.mutate(m)
		err := m.Check(tt.id)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Check = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	m := at(t, Running)
	m.MACs = []string{"52:54:00:12:34:56"}
	m.Metadata["rule-core"] = "true"
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Machine
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Check("sn0001"); err != nil {
		t.Fatal(err)
	}
	if back.State != Running || !back.LastBoot.Equal(m.LastBoot) || len(back.History) != len(m.History) || back.Metadata["rule-core"] != "true" {
		t.Fatalf("round trip lost data: %s", data)
	}
	// A never-booted machine has no lastBoot field.
	data, _ = json.Marshal(New("sn0002", t0, "r0"))
	if strings.Contains(string(data), "lastBoot") {
		t.Fatalf("zero LastBoot is written: %s", data)
	}
}

// A request that reaches a record by MAC must send the record's serial and
// UUID; a record an operator added without them takes those of the first
// contact, and from then on refuses others.
func TestMismatchAndTakeIdentity(t *testing.T) {
	const uuid = "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	m := New("rack1-u7", t0, "r0") // pre-registered: no serial, no UUID
	if err := m.Mismatch("SN-1", uuid); err != nil {
		t.Fatalf("a record without serial or UUID refused: %v", err)
	}
	if !m.TakeIdentity("SN-1", uuid) || m.Serial != "SN-1" || m.UUID != uuid {
		t.Fatalf("first contact not taken: %+v", m)
	}
	if m.TakeIdentity("SN-2", "") || m.Serial != "SN-1" {
		t.Fatal("a recorded serial was replaced")
	}
	if err := m.Mismatch("SN-1", uuid); err != nil {
		t.Fatalf("the machine itself refused: %v", err)
	}
	for _, tt := range []struct{ serial, uuid, field string }{
		{"SN-2", uuid, "serial"},
		{"", uuid, "serial"}, // only the MAC sent
		{"sn-1", uuid, "serial"},
		{"SN-1", "", "UUID"},
		{"SN-1", "00000000-0000-4000-8000-000000000000", "UUID"},
	} {
		err := m.Mismatch(tt.serial, tt.uuid)
		var mm *IdentityMismatchError
		if !errors.As(err, &mm) || mm.Field != tt.field || mm.ID != "rack1-u7" {
			t.Errorf("serial %q uuid %q: %v", tt.serial, tt.uuid, err)
		}
	}
	// A record with only a UUID takes a serial, but refuses another UUID.
	u := New("u", t0, "r0")
	u.UUID = uuid
	if err := u.Mismatch("SN-9", uuid); err != nil || !u.TakeIdentity("SN-9", uuid) {
		t.Fatalf("UUID-only record: %v", err)
	}
}

func TestReinstallEndsTheLegacyToken(t *testing.T) {
	m := at(t, Running)
	m.LegacyToken = true
	if err := m.Reinstall("r0", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if m.LegacyToken || m.Generation != 1 {
		t.Fatalf("after a reinstall: legacy %v, generation %d", m.LegacyToken, m.Generation)
	}
}

// A failure reason holds what the installer sent: stored escaped and
// bounded.
func TestFailReasonStoredEscaped(t *testing.T) {
	m := New("m1", time.Now(), "r")
	if err := m.StartInstall("r", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.MarkFailed("installer reported: \x1b[2J"+strings.Repeat("x", 1000), "r", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.FailReason, `installer reported: \x1b[2J`) || len(m.FailReason) > MaxReason || m.History[len(m.History)-1].Reason != m.FailReason {
		t.Fatalf("reason %q (%d bytes)", m.FailReason, len(m.FailReason))
	}
}

// What a machine is installed with is kept bounded and well-formed, and
// a record holding more than MaxArtifacts is refused when read.
func TestSetArtifacts(t *testing.T) {
	m := New("m1", time.Now(), "r")
	m.MachineID = strings.Repeat("0", 32)
	img := strings.Repeat("a", 64)
	if !m.SetArtifacts(map[string]string{ArtifactImage: img, ArtifactKernel: "not hex", "Bad Role": img}) {
		t.Fatal("nothing set")
	}
	if len(m.Artifacts) != 1 || m.Artifacts[ArtifactImage] != img {
		t.Fatalf("kept %v", m.Artifacts)
	}
	if m.SetArtifacts(map[string]string{ArtifactImage: img}) {
		t.Fatal("the same digests count as a change")
	}
	many := map[string]string{}
	for i := 0; i < 3*MaxArtifacts; i++ {
		many[fmt.Sprintf("role%d", i)] = img
	}
	m.SetArtifacts(many)
	if len(m.Artifacts) != MaxArtifacts {
		t.Fatalf("%d artifacts kept", len(m.Artifacts))
	}
	if err := m.Check("m1"); err != nil {
		t.Fatal(err)
	}
	m.Artifacts["one-too-many"] = img
	if err := m.Check("m1"); err == nil {
		t.Fatal("a record with too many artifacts passes")
	}
}

// The digests are recorded when the install starts, named in its history
// entry, replaced by an installer retry that got other ones, and kept
// across a reinstall until the next install starts.
func TestStartInstallWith(t *testing.T) {
	m := New("m1", time.Now(), "r")
	a, b := map[string]string{ArtifactImage: strings.Repeat("a", 64)}, map[string]string{ArtifactImage: strings.Repeat("b", 64)}
	if err := m.StartInstallWith("r1", time.Now(), a); err != nil {
		t.Fatal(err)
	}
	if last := m.History[len(m.History)-1]; last.State != Installing || last.Reason != "installer started (image sha256 aaaaaaaaaaaa)" {
		t.Fatalf("history %+v", last)
	}
	if err := m.StartInstallWith("r2", time.Now(), a); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("a retry with the same digests: %v", err)
	}
	if err := m.StartInstallWith("r2", time.Now(), b); err != nil || m.Artifacts[ArtifactImage] != b[ArtifactImage] || len(m.History) != 2 {
		t.Fatalf("a retry with other digests: %v, %v, %d history entries", err, m.Artifacts, len(m.History))
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.MarkInstalled("r", time.Now()))
	must(m.Reinstall("r", time.Now()))
	if m.Artifacts[ArtifactImage] != b[ArtifactImage] {
		t.Fatal("a reinstall forgot what the disk holds")
	}
	if err := m.StartInstallWith("r", time.Now(), b); err == nil {
		must(m.MarkInstalled("r", time.Now()))
	} else {
		t.Fatal(err)
	}
	var tr *TransitionError
	if err := m.StartInstallWith("r", time.Now(), a); !errors.As(err, &tr) || m.Artifacts[ArtifactImage] != b[ArtifactImage] {
		t.Fatalf("an installed machine: %v, %v", err, m.Artifacts)
	}
}
