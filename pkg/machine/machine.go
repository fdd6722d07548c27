// Package machine is the machine record mayu keeps in etcd and the rules of
// its life: configured → installing → installed → running, failed when an
// install goes wrong, and back to configured only on an explicit reinstall.
// Every method here is pure; the registry makes each change one etcd
// transaction.
package machine

import (
	"errors"
	"fmt"
	"time"

	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/identity"
)

// State is where a machine stands in its install.
type State string

const (
	Configured State = "configured" // registered; its next network boot installs it
	Installing State = "installing" // the installer runs
	Installed  State = "installed"  // the disk is written; DHCP ignores it from now on
	Running    State = "running"    // the installed OS reported boot-complete
	Failed     State = "failed"     // the installer reported an error or timed out
)

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case Configured, Installing, Installed, Running, Failed:
		return true
	}
	return false
}

// historyLimit keeps records small; the newest events are kept.
const historyLimit = 50

// MaxReason bounds a failure reason in the record (an installer's report
// included), "..." of a cut one included.
const MaxReason = 256

// Event is one state change.
type Event struct {
	State   State     `json:"state"`
	At      time.Time `json:"at"`
	Replica string    `json:"replica"`
	Reason  string    `json:"reason,omitempty"`
}

// Machine is one record under /mayu/machines/<id>.
type Machine struct {
	ID           string            `json:"id"`
	Serial       string            `json:"serial,omitempty"`
	UUID         string            `json:"uuid,omitempty"`
	MACs         []string          `json:"macs"`
	Arch         string            `json:"arch,omitempty"`
	MachineID    string            `json:"machineID"`
	Hostname     string            `json:"hostname"`
	Profile      string            `json:"profile"`
	ProfileSlot  int               `json:"profileSlot"` // -1 for the default profile
	InternalAddr string            `json:"internalAddr"`
	Metadata     map[string]string `json:"metadata"`
	State        State             `json:"state"`
	Since        time.Time         `json:"since"` // when the current state began
	// Generation counts installs; the node token is bound to it, so a
	// reinstall rotates the token.
	Generation int `json:"generation"`
	// TokenNonce is a random value fixed when the record is created: the
	// node token is bound to it too, so a machine deleted and added again
	// (a new record) gets a new token, and the one on its old disk opens
	// nothing. Empty only in records written before etcd schema 2.
	TokenNonce string `json:"tokenNonce,omitempty"`
	// LegacyToken marks a record written before etcd schema 2: the token
	// of that format (an HMAC of id and generation) handed out for its
	// current generation still opens its calls, so an install in flight
	// during the upgrade completes. A reinstall ends it.
	LegacyToken bool   `json:"legacyToken,omitempty"`
	FailReason  string `json:"failReason,omitempty"`
	// ConfigFailed marks a failure of the machine's own config (it did
	// not render or validate): no config was served, so no announcement
	// of `installed` is believed until a reinstall.
	ConfigFailed  bool      `json:"configFailed,omitempty"`
	Registered    time.Time `json:"registered"`
	LastBoot      time.Time `json:"lastBoot,omitzero"`
	LastReplica   string    `json:"lastReplica,omitempty"`
	History       []Event   `json:"history"`
	Preregistered bool      `json:"preregistered,omitempty"`
	// Artifacts are the SHA-256 (hex) of what the machine was (or is
	// being) installed with, by role (kernel, initrd, image): set when its
	// installer fetches the first-stage script, kept until the next
	// install starts.
	Artifacts map[string]string `json:"artifacts,omitempty"`
}

// Roles of Machine.Artifacts.
const (
	ArtifactKernel = "kernel"
	ArtifactInitrd = "initrd"
	ArtifactImage  = "image"
)

// MaxArtifacts bounds Machine.Artifacts: one per role, and room for a few
// more roles.
const MaxArtifacts = 8

// SetArtifacts records the digests the machine is installed with, by
// role, and reports whether that changed the record. Only well-formed
// entries (a known role, 64 hex digits) are kept, at most MaxArtifacts:
// the record stays small whatever the caller passes.
func (m *Machine) SetArtifacts(a map[string]string) bool {
	kept := map[string]string{}
	for role, sum := range a {
		if len(kept) < MaxArtifacts && isRole(role) && isHex(sum, 64) {
			kept[role] = sum
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	if len(kept) == len(m.Artifacts) {
		same := true
		for k, v := range kept {
			if m.Artifacts[k] != v {
				same = false
			}
		}
		if same {
			return false
		}
	}
	m.Artifacts = kept
	return true
}

func isRole(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// HasBeenInstalled is true for a machine that must never be installed again
// without an explicit reinstall.
func (m *Machine) HasBeenInstalled() bool {
	return m.State == Installed || m.State == Running
}

// HasMAC reports whether mac (normalised) is one of the machine's.
func (m *Machine) HasMAC(mac string) bool {
	for _, x := range m.MACs {
		if x == mac {
			return true
		}
	}
	return false
}

// IdentityMismatchError is a request that reached a record through its id
// or one of its MACs but sent another serial or UUID than the record
// holds: another machine (or someone) claiming it. It gets nothing of the
// record.
type IdentityMismatchError struct {
	ID, Field, Recorded, Sent string
}

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("machine %s holds %s %q, the request sent %q", e.ID, e.Field, e.Recorded, e.Sent)
}

// Mismatch reports a serial or UUID the record holds that a request did
// not send (an empty one included). A field the record lacks, or holds
// only a placeholder in (identity.Identifying), agrees with anything:
// TakeIdentity fills an empty one.
func (m *Machine) Mismatch(serial, uuid string) error {
	bySerial, byUUID := identity.Identifying(m.Serial, m.UUID)
	switch {
	// A record written before node text was stored escaped holds the raw
	// serial; what a request sends is compared escaped (hostile.Text is
	// idempotent).
	case bySerial && serial != hostile.Text(m.Serial, identity.MaxSerial):
		return &IdentityMismatchError{ID: m.ID, Field: "serial", Recorded: m.Serial, Sent: serial}
	case byUUID && uuid != m.UUID:
		return &IdentityMismatchError{ID: m.ID, Field: "UUID", Recorded: m.UUID, Sent: uuid}
	}
	return nil
}

// TakeIdentity records the serial and UUID a machine sent where the record
// has none (an operator pre-registered it by id or MAC): from its first
// contact on, a request with other values is refused. It reports whether
// it changed the record.
func (m *Machine) TakeIdentity(serial, uuid string) bool {
	changed := false
	if m.Serial == "" && serial != "" {
		m.Serial, changed = serial, true
	}
	if m.UUID == "" && uuid != "" {
		m.UUID, changed = uuid, true
	}
	return changed
}

// ErrUnchanged means a request asked for the state the machine is already
// in: callers answer success without writing.
var ErrUnchanged = errors.New("unchanged")

// TransitionError is a change the machine's state does not allow.
type TransitionError struct {
	ID   string
	From State
	To   State
	Hint string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("machine %s is %s and cannot become %s", e.ID, e.From, e.To)
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	return msg
}

func (m *Machine) set(to State, replica, reason string, now time.Time) {
	m.State = to
	m.Since = now
	m.LastReplica = replica
	m.History = append(m.History, Event{State: to, At: now, Replica: replica, Reason: reason})
	if len(m.History) > historyLimit {
		m.History = append([]Event(nil), m.History[len(m.History)-historyLimit:]...)
	}
}

// New is a freshly registered machine.
func New(id string, now time.Time, replica string) *Machine {
	m := &Machine{ID: id, ProfileSlot: -1, Metadata: map[string]string{}, Registered: now}
	m.set(Configured, replica, "registered", now)
	return m
}

// StartInstall records that the installer fetched its first-stage script.
func (m *Machine) StartInstall(replica string, now time.Time) error {
	switch m.State {
	case Configured:
		m.FailReason = ""
		m.set(Installing, replica, "installer started", now)
		return nil
	case Installing:
		return ErrUnchanged // an installer retry
	}
	return &TransitionError{ID: m.ID, From: m.State, To: Installing, Hint: "run `mayuctl reinstall " + m.ID + "` to install it again"}
}

// StartInstallWith is StartInstall that also records the digests the
// machine is installed with (SetArtifacts); the history entry names the
// image's. An installer retry (already installing) that fetched its
// script from a replica serving other digests updates them: the record
// keeps those the script it runs checks.
func (m *Machine) StartInstallWith(replica string, now time.Time, artifacts map[string]string) error {
	err := m.StartInstall(replica, now)
	if err != nil && !errors.Is(err, ErrUnchanged) {
		return err
	}
	changed := m.SetArtifacts(artifacts)
	if img := m.Artifacts[ArtifactImage]; err == nil && img != "" {
		m.History[len(m.History)-1].Reason += " (image sha256 " + img[:12] + ")"
	}
	if err != nil && changed {
		return nil
	}
	return err
}

// MarkInstalled records the installer's announcement that the disk is written.
func (m *Machine) MarkInstalled(replica string, now time.Time) error {
	switch m.State {
	case Installing, Failed: // a late success after a timeout still wrote the disk
		if m.ConfigFailed {
			return &TransitionError{ID: m.ID, From: m.State, To: Installed}
		}
		m.FailReason = ""
		m.set(Installed, replica, "installer finished", now)
		return nil
	case Installed:
		return ErrUnchanged
	}
	return &TransitionError{ID: m.ID, From: m.State, To: Installed}
}

// MarkFailed records an installer's error report or an install timeout.
// The reason may hold what the installer sent: it is stored escaped and
// bounded.
func (m *Machine) MarkFailed(reason, replica string, now time.Time) error {
	switch m.State {
	case Installing:
		reason = hostile.Text(reason, MaxReason-3)
		m.FailReason = reason
		m.set(Failed, replica, reason, now)
		return nil
	case Failed:
		return ErrUnchanged
	}
	return &TransitionError{ID: m.ID, From: m.State, To: Failed}
}

// BootComplete records that the installed OS came up.
func (m *Machine) BootComplete(replica string, now time.Time) error {
	switch m.State {
	case Installed, Running:
		m.LastBoot = now
		if m.State == Running {
			m.LastReplica = replica
			return nil // a reboot: new LastBoot, no new history entry
		}
		m.set(Running, replica, "boot complete", now)
		return nil
	}
	return &TransitionError{ID: m.ID, From: m.State, To: Running, Hint: "only an installed machine reports boot-complete"}
}

// Reinstall sends the machine back to configured and rotates its token.
func (m *Machine) Reinstall(replica string, now time.Time) error {
	if m.State == Configured {
		return ErrUnchanged
	}
	m.Generation++
	m.LegacyToken = false // the next install gets a token of the current format
	m.FailReason = ""
	m.ConfigFailed = false
	m.set(Configured, replica, "reinstall requested", now)
	return nil
}

// Unfinished reports whether m registered on first contact and was never
// installed: what a flood of made-up serials creates. Machines an operator
// added or reinstalled (a generation) are never unfinished.
func (m *Machine) Unfinished() bool {
	if m.Preregistered || m.Generation != 0 {
		return false
	}
	for _, e := range m.History {
		if e.State == Installed || e.State == Running {
			return false
		}
	}
	return !m.HasBeenInstalled()
}

// RegistrationExpired reports whether an unfinished machine has sat longer
// than after in configured without ever starting an install: such a record
// may be deleted (the machine registers again if it comes back). A failed
// machine is not: it waits for an operator's reinstall (expiring it would
// reinstall it unasked at its next boot, and lose a late success), and
// counts against cluster.self_registration.max_unfinished meanwhile.
func (m *Machine) RegistrationExpired(after time.Duration, now time.Time) bool {
	if !m.Unfinished() || m.State != Configured || now.Sub(m.Since) <= after {
		return false
	}
	for _, e := range m.History {
		if e.State != Configured {
			return false
		}
	}
	return true
}

// InstallExpired reports whether an install has outlasted timeout.
func (m *Machine) InstallExpired(timeout time.Duration, now time.Time) bool {
	return m.State == Installing && now.Sub(m.Since) > timeout
}

// Check reports what is wrong with a record read from etcd.
func (m *Machine) Check(id string) error {
	switch {
	case m.ID != id:
		return fmt.Errorf("record holds id %q", m.ID)
	case !m.State.Valid():
		return fmt.Errorf("unknown state %q", m.State)
	case !isMachineID(m.MachineID):
		return fmt.Errorf("machineID %q is not 32 hex digits", m.MachineID)
	case len(m.Artifacts) > MaxArtifacts:
		return fmt.Errorf("%d artifacts, at most %d", len(m.Artifacts), MaxArtifacts)
	}
	return nil
}

// isMachineID reports whether s is 32 lower-case hex digits, as the
// registry makes them. The hostname is cut from it, so nothing else passes.
func isMachineID(s string) bool { return isHex(s, 32) }

// isHex reports whether s is n lower-case hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MarkConfigFailed records that the machine's first stage or final config
// does not render, or renders an Ignition config that does not validate.
// It is found when the installer asks for its first stage, before the
// installer has touched the disk, so a configured machine fails too; the
// reason is stored escaped and bounded, as MarkFailed's.
func (m *Machine) MarkConfigFailed(reason, replica string, now time.Time) error {
	if m.State != Configured {
		err := m.MarkFailed(reason, replica, now)
		if err == nil {
			m.ConfigFailed = true
		}
		return err
	}
	m.ConfigFailed = true
	m.FailReason = hostile.Text(reason, MaxReason-3)
	m.set(Failed, replica, m.FailReason, now)
	return nil
}
