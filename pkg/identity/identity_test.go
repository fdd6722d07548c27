package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const uuid = "4c4c4544-0042-3510-8048-b4c04f4e3332"
	const mac = "52:54:00:12:34:56"
	const macID = "52-54-00-12-34-56"
	tests := []struct {
		name    string
		in      Input
		want    string
		source  Source
		wantErr string // substring; "" means success
	}{
		{name: "serial lower-cased", in: Input{Serial: "ABC-123.X_y", UUID: uuid, MAC: mac}, want: "abc-123.x_y", source: FromSerial},
		{name: "serial trimmed", in: Input{Serial: "  SN0001 \t", UUID: uuid}, want: "sn0001", source: FromSerial},
		{name: "qemu placeholder", in: Input{Serial: "0123456789", UUID: uuid, MAC: mac}, want: uuid, source: FromUUID},
		{name: "oem placeholder", in: Input{Serial: "To Be Filled By O.E.M.", UUID: uuid}, want: uuid, source: FromUUID},
		{name: "default string", in: Input{Serial: "Default string", UUID: uuid}, want: uuid, source: FromUUID},
		{name: "system serial number", in: Input{Serial: "System Serial Number", UUID: uuid}, want: uuid, source: FromUUID},
		{name: "not specified", in: Input{Serial: "Not Specified", UUID: uuid}, want: uuid, source: FromUUID},
		{name: "vmware truncated serial", in: Input{Serial: "VMware-42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8", UUID: uuid}, want: uuid, source: FromUUID},
		{name: "empty serial", in: Input{UUID: uuid, MAC: mac}, want: uuid, source: FromUUID},
		{name: "uuid lower-cased", in: Input{UUID: strings.ToUpper(uuid)}, want: uuid, source: FromUUID},
		{name: "uuid all zeros", in: Input{Serial: "0123456789", UUID: "00000000-0000-0000-0000-000000000000", MAC: mac}, want: macID, source: FromMAC},
		{name: "uuid all f", in: Input{UUID: "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", MAC: mac}, want: macID, source: FromMAC},
		{name: "uuid missing", in: Input{Serial: "Not Specified", MAC: mac}, want: macID, source: FromMAC},
		{name: "mac upper hyphen", in: Input{MAC: "52-54-00-12-34-56"}, want: macID, source: FromMAC},
		{name: "mac bare upper", in: Input{MAC: "525400ABCDEF"}, want: "52-54-00-ab-cd-ef", source: FromMAC},
		{name: "nothing", in: Input{}, wantErr: ErrNoIdentity.Error()},
		{name: "only placeholders", in: Input{Serial: "Default string", UUID: "00000000-0000-0000-0000-000000000000"}, wantErr: ErrNoIdentity.Error()},
		{name: "bad mac", in: Input{MAC: "not-a-mac"}, wantErr: "MAC address"},
		{name: "path traversal serial", in: Input{Serial: "../etc", UUID: uuid}, wantErr: Pattern.String()},
		{name: "slash serial", in: Input{Serial: "a/b", UUID: uuid}, wantErr: Pattern.String()},
		{name: "space in serial", in: Input{Serial: "a b", UUID: uuid}, wantErr: Pattern.String()},
		{name: "65-char serial", in: Input{Serial: strings.Repeat("a", 65), UUID: uuid}, wantErr: Pattern.String()},
		{name: "64-char serial", in: Input{Serial: strings.Repeat("A", 64)}, want: strings.Repeat("a", 64), source: FromSerial},
		{name: "bad uuid chars", in: Input{UUID: "{1234}"}, wantErr: Pattern.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, source, err := Resolve(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Resolve(%+v) = %q, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve(%+v) error %q does not contain %q", tt.in, err, tt.wantErr)
				}
				if got != "" {
					t.Fatalf("Resolve(%+v) returned id %q with an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%+v): %v", tt.in, err)
			}
			if got != tt.want || source != tt.source {
				t.Fatalf("Resolve(%+v) = %q from %s, want %q from %s", tt.in, got, source, tt.want, tt.source)
			}
			if err := Check(got); err != nil {
				t.Fatalf("Resolve returned an id that fails Check: %v", err)
			}
		})
	}
}

func TestResolveNoIdentityIsSentinel(t *testing.T) {
	_, _, err := Resolve(Input{Serial: "  ", UUID: " "})
	if !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("err = %v, want ErrNoIdentity", err)
	}
}

func TestCheck(t *testing.T) {
	for _, id := range []string{"a", "0", "abc-def", "a.b_c-d", strings.Repeat("z", 64), "52-54-00-12-34-56"} {
		if err := Check(id); err != nil {
			t.Errorf("Check(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "-a", "_a", ".hidden", "A", "a/b", "a b", "a\x00b", "é", strings.Repeat("z", 65)} {
		if err := Check(id); err == nil {
			t.Errorf("Check(%q) = nil, want an error", id)
		}
	}
	// Hostile input does not flood the message.
	err := Check(strings.Repeat("/", 10000))
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("Check of a long id: %v", err)
	}
}

func TestDecodeSerial(t *testing.T) {
	tests := []struct {
		hexraw  string
		want    string
		wantErr bool
	}{
		{hexraw: "4c41422d534e2d30303031", want: "LAB-SN-0001"},
		{hexraw: "4C41422D534E2D30303031", want: "LAB-SN-0001"},
		{hexraw: " 4c41422d534e2d30303031\n", want: "LAB-SN-0001"},
		{hexraw: "4c41422d534e2d3030303120200000", want: "LAB-SN-0001"}, // trailing spaces and NULs
		{hexraw: "", want: ""},
		{hexraw: "4c4", wantErr: true},    // odd length
		{hexraw: "zz", wantErr: true},     // not hex
		{hexraw: "LAB-SN", wantErr: true}, // plain serial, not hexraw
	}
	for _, tt := range tests {
		got, err := DecodeSerial(tt.hexraw)
		if tt.wantErr {
			if err == nil {
				t.Errorf("DecodeSerial(%q) = %q, want an error", tt.hexraw, got)
			} else if !strings.Contains(err.Error(), "hexraw") {
				t.Errorf("DecodeSerial(%q) error %q does not say what iPXE should send", tt.hexraw, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DecodeSerial(%q) = %q, %v; want %q", tt.hexraw, got, err, tt.want)
		}
	}
}

func TestNormalizeMAC(t *testing.T) {
	const want = "52:54:00:ab:cd:ef"
	for _, in := range []string{
		"52:54:00:ab:cd:ef",
		"52:54:00:AB:CD:EF",
		"52-54-00-ab-cd-ef",
		"52-54-00-AB-CD-EF",
		"525400abcdef",
		"525400ABCDEF",
		" 52:54:00:ab:cd:ef\n",
	} {
		got, err := NormalizeMAC(in)
		if err != nil || got != want {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"",
		"52:54:00:ab:cd",            // too short
		"52:54:00:ab:cd:ef:01",      // too long
		"02:00:00:00:00:00:00:01",   // EUI-64
		"52:54:00:ab:cd:eg",         // not hex
		"5254000abcdef",             // 13 bare digits
		"525400abcdeg",              // bare, not hex
		"52:54:00:ab:cd:ef/../../x", // garbage after
		strings.Repeat("52:", 1000), // hostile
	} {
		got, err := NormalizeMAC(in)
		if err == nil {
			t.Errorf("NormalizeMAC(%q) = %q, want an error", in, got)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("NormalizeMAC error is not clipped: %d bytes", len(err.Error()))
		}
	}
}

// FuzzResolve checks that Resolve never panics and that whatever id it
// returns is safe to use as an etcd key segment or a URL path segment.
//
// Note: the design's pattern [a-z0-9][a-z0-9._-]{0,63} allows "." runs
// inside an id ("a..b"); that is harmless because an id can never be, or
// begin with, a ".." path component and never contains "/". The fuzz target
// asserts exactly that.
func FuzzResolve(f *testing.F) {
	f.Add("ABC-123", "4c4c4544-0042-3510-8048-b4c04f4e3332", "52:54:00:12:34:56")
	f.Add("0123456789", "00000000-0000-0000-0000-000000000000", "525400123456")
	f.Add("../etc", "", "")
	f.Add("VMware-42 1a", "..", "52-54-00-12-34-56")
	f.Add("", "/", "5254.0012.3456")
	f.Add("\u212a", "", "") // Kelvin sign lower-cases to ASCII k
	f.Fuzz(func(t *testing.T, serial, uuid, mac string) {
		id, source, err := Resolve(Input{Serial: serial, UUID: uuid, MAC: mac})
		if err != nil {
			if id != "" {
				t.Fatalf("id %q returned with error %v", id, err)
			}
			return
		}
		if err := Check(id); err != nil {
			t.Fatalf("Resolve(%q, %q, %q) = %q from %s, which fails Check: %v", serial, uuid, mac, id, source, err)
		}
		if strings.Contains(id, "/") || strings.HasPrefix(id, ".") || id == ".." {
			t.Fatalf("Resolve(%q, %q, %q) = %q: unsafe as a path segment", serial, uuid, mac, id)
		}
		if strings.ToLower(id) != id {
			t.Fatalf("id %q is not lower-case", id)
		}
		if source == FromMAC && (len(id) != 17 || strings.Contains(id, ":")) {
			t.Fatalf("MAC-derived id %q is not in aa-bb-cc-dd-ee-ff form", id)
		}
	})
}
