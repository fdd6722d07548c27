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
