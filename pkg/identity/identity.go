// Package identity turns what a machine says about itself (SMBIOS serial,
// SMBIOS UUID, MAC address) into the one id mayu files it under.
//
// The rules follow the original mayu: the serial, lower-cased, unless it is
// empty or a vendor placeholder; then the UUID, unless it is missing or all
// zeros; then the first MAC. An id is checked against a strict pattern and
// is never joined into a file path.
package identity

import (
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// Pattern is what a machine id must look like.
var Pattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// placeholders are serials that vendors ship unset; they identify nothing.
var placeholders = []string{
	"0123456789", // QEMU/KVM default
	"to be filled by o.e.m.",
	"to be filled by oem",
	"default string",
	"system serial number",
	"not specified",
	"not applicable",
	"none",
	"n/a",
	"na",
	"0",
	"00000000",
	"000000000000",
	"123456789",
	"chassis serial number",
	"serial number",
	"invalid",
	"unknown",
	"empty",
	".",
}

// MaxSerial bounds the SMBIOS serial mayu accepts (SMBIOS strings are
// short; a longer one is hostile input, not a serial).
const MaxSerial = 128

// ErrNoIdentity is returned when a machine sent nothing usable.
var ErrNoIdentity error = &Error{"the machine sent no usable serial, UUID or MAC address"}

// Input is what a node sent with its script request.
type Input struct {
	Serial string // plain SMBIOS serial
	UUID   string // SMBIOS UUID, as iPXE prints it
	MAC    string // any common notation
}

// Source says which field an id came from.
type Source string

const (
	FromSerial Source = "serial"
	FromUUID   Source = "uuid"
	FromMAC    Source = "mac"
)

// Resolve applies the identity rules. The error explains, in words an
// operator can act on, why a machine cannot be identified.
func Resolve(in Input) (string, Source, error) {
	serial := strings.ToLower(strings.TrimSpace(in.Serial))
	if usableSerial(serial) {
		if err := Check(serial); err != nil {
			return "", FromSerial, fmt.Errorf("serial %q: %w", in.Serial, err)
		}
		return serial, FromSerial, nil
	}
	uuid := strings.ToLower(strings.TrimSpace(in.UUID))
	if usableUUID(uuid) {
		if err := Check(uuid); err != nil {
			return "", FromUUID, fmt.Errorf("uuid %q: %w", in.UUID, err)
		}
		return uuid, FromUUID, nil
	}
	if in.MAC != "" {
		mac, err := NormalizeMAC(in.MAC)
		if err != nil {
			return "", FromMAC, err
		}
		return strings.ReplaceAll(mac, ":", "-"), FromMAC, nil
	}
	return "", "", ErrNoIdentity
}

// Check refuses anything that is not a well-formed id.
func Check(id string) error {
	if id == "" {
		return &Error{"empty machine id"}
	}
	if !Pattern.MatchString(id) {
		return invalid("machine id %q is not valid: it must match %s (lower-case letters, digits, '.', '_' and '-', at most 64 characters)", clip(id), Pattern)
	}
	return nil
}

// Identifying reports whether a serial and a UUID, as a machine sent them,
// tell it apart from other machines: neither empty nor a vendor
// placeholder (an all-zero UUID, "To Be Filled By O.E.M.", ...).
func Identifying(serial, uuid string) (bySerial, byUUID bool) {
	return usableSerial(strings.ToLower(strings.TrimSpace(serial))), usableUUID(strings.ToLower(strings.TrimSpace(uuid)))
}

func usableSerial(s string) bool {
	if s == "" || strings.Contains(s, "vmware") {
		// iPXE truncates VMware serials, so they are not unique.
		return false
	}
	for _, p := range placeholders {
		if s == p {
			return false
		}
	}
	return true
}

func usableUUID(u string) bool {
	if u == "" {
		return false
	}
	digits := strings.ReplaceAll(u, "-", "")
	return strings.Trim(digits, "0") != "" && strings.Trim(digits, "f") != ""
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// CheckUUID refuses anything but a UUID as iPXE prints ${uuid}; empty is
// allowed (iPXE prints nothing when the firmware has none).
func CheckUUID(u string) error {
	if u != "" && !uuidPattern.MatchString(strings.ToLower(u)) {
		return invalid("uuid %q is not a UUID (like 8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b)", clip(u))
	}
	return nil
}

// DecodeSerial decodes iPXE's ${serial:hexraw}. iPXE expands a missing
// setting to an empty string, which decodes to an empty serial.
func DecodeSerial(hexraw string) (string, error) {
	if len(hexraw) > 2*MaxSerial {
		return "", invalid("serial is longer than %d bytes", MaxSerial)
	}
	b, err := hex.DecodeString(strings.TrimSpace(hexraw))
	if err != nil {
		return "", invalid("serial %q is not hex (iPXE sends ${serial:hexraw}): %v", clip(hexraw), err)
	}
	// SMBIOS strings may carry trailing NULs or spaces.
	return strings.TrimRight(string(b), "\x00 "), nil
}

// NormalizeMAC returns a MAC in lower-case colon notation. It accepts
// colons, hyphens (iPXE's ${mac:hexhyp}) or bare hex.
func NormalizeMAC(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 12 && !strings.ContainsAny(s, ":-.") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	hw, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil || len(hw) != 6 {
		return "", invalid("MAC address %q is not valid: use six hex bytes like 52:54:00:12:34:56", clip(s))
	}
	return hw.String(), nil
}

// clip keeps hostile input from flooding an error message.
func clip(s string) string { return hostile.Clip(s, 80) }

// Error is input that breaks the identity rules: a malformed id, serial,
// UUID or MAC. The front ends answer it with 400.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func invalid(format string, a ...any) error { return &Error{fmt.Sprintf(format, a...)} }
