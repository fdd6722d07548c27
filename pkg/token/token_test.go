package token

import (
	"encoding/hex"
	"testing"
	"time"
)

var secret = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

const nonce = "5f1e0c7d9a2b4c6e8f1a3b5c7d9e0f21"

func TestForIsStable(t *testing.T) {
	a := For(secret, "sn0001", nonce, 0)
	b := For(append([]byte(nil), secret...), "sn0001", nonce, 0)
	if a != b {
		t.Fatalf("same id, nonce and generation gave %q and %q", a, b)
	}
	if len(a) != 64 {
		t.Fatalf("token %q is %d characters, want 64", a, len(a))
	}
	if _, err := hex.DecodeString(a); err != nil {
		t.Fatalf("token %q is not hex: %v", a, err)
	}
}

func TestForDiffers(t *testing.T) {
	base := For(secret, "sn0001", nonce, 1)
	others := map[string]string{
		"generation":   For(secret, "sn0001", nonce, 2),
		"id":           For(secret, "sn0002", nonce, 1),
		"secret":       For([]byte("another secret, another cluster, another token"), "sn0001", nonce, 1),
		"id/gen split": For(secret, "sn000", nonce, 11),
		"prefix id":    For(secret, "sn00011", nonce, 1),
		// A machine deleted and added again is a new record with a new
		// nonce: the token on its old disk is not its token.
		"nonce":        For(secret, "sn0001", "0000000000000000000000000000000a", 1),
		"legacy":       Legacy(secret, "sn0001", 1),
		"id/nonce cut": For(secret, "sn0001"+"\x00"+nonce[:4], nonce[4:], 1),
	}
	for what, tok := range others {
		if tok == base {
			t.Errorf("a different %s gave the same token", what)
		}
	}
}

func TestValid(t *testing.T) {
	tok := For(secret, "sn0001", nonce, 3)
	if !Valid(secret, "sn0001", nonce, 3, tok) {
		t.Fatal("the machine's own token is refused")
	}
	tests := map[string]struct {
		secret []byte
		id     string
		nonce  string
		gen    int
		tok    string
	}{
		"empty token":           {secret, "sn0001", nonce, 3, ""},
		"wrong token":           {secret, "sn0001", nonce, 3, "deadbeef"},
		"another machine's":     {secret, "sn0001", nonce, 3, For(secret, "sn0002", nonce, 3)},
		"older generation":      {secret, "sn0001", nonce, 3, For(secret, "sn0001", nonce, 2)},
		"another record's":      {secret, "sn0001", nonce, 3, For(secret, "sn0001", "ffffffffffffffffffffffffffffffff", 3)},
		"legacy format":         {secret, "sn0001", nonce, 3, Legacy(secret, "sn0001", 3)},
		"no nonce":              {secret, "sn0001", "", 3, For(secret, "sn0001", "", 3)},
		"truncated":             {secret, "sn0001", nonce, 3, tok[:len(tok)-1]},
		"half":                  {secret, "sn0001", nonce, 3, tok[:32]},
		"extended":              {secret, "sn0001", nonce, 3, tok + "0"},
		"upper-cased":           {secret, "sn0001", nonce, 3, upper(tok)},
		"empty secret":          {nil, "sn0001", nonce, 3, For(nil, "sn0001", nonce, 3)},
		"token of other secret": {secret, "sn0001", nonce, 3, For([]byte("x"), "sn0001", nonce, 3)},
	}
	for name, tt := range tests {
		if tt.tok == tok && name != "upper-cased" {
			t.Fatalf("%s: test token equals the real one", name)
		}
		if Valid(tt.secret, tt.id, tt.nonce, tt.gen, tt.tok) {
			t.Errorf("%s: Valid accepted %q", name, tt.tok)
		}
	}
}

// The legacy format is exactly what mayu made before schema 2: a token an
// installer in flight carries from before the upgrade.
func TestLegacyIsThePreviousFormat(t *testing.T) {
	// HMAC-SHA256(secret, "sn0001\x000"), as the previous release computed it.
	const want = "ac790954d3bf416ff9885993de2bae0b7185f0b3a4c6950a30cb7bebf7c5af1b"
	if got := Legacy(secret, "sn0001", 0); got != want {
		t.Fatalf("legacy token %q, want %q", got, want)
	}
	if !ValidLegacy(secret, "sn0001", 0, want) || ValidLegacy(secret, "sn0001", 1, want) {
		t.Fatal("ValidLegacy disagrees with Legacy")
	}
}

func TestKeysMatch(t *testing.T) {
	now := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	old := []byte("the secret before the rotation, 64 characters long ...........")
	k := Keys{Current: secret, Previous: old, PreviousUntil: now.Add(time.Hour)}
	s := Subject{ID: "sn0001", Nonce: nonce, Generation: 2}

	if got := k.Make(s); got != For(secret, "sn0001", nonce, 2) {
		t.Fatalf("Make gave %q", got)
	}
	if got := k.Make(Subject{ID: "sn0001", Generation: 2}); got != Legacy(secret, "sn0001", 2) {
		t.Fatalf("Make for a record without a nonce gave %q", got)
	}
	tests := []struct {
		name string
		s    Subject
		tok  string
		at   time.Time
		want Match
	}{
		{"fresh", s, For(secret, "sn0001", nonce, 2), now, Fresh},
		{"previous secret in its window", s, For(old, "sn0001", nonce, 2), now, PreviousSecret},
		{"previous secret after its window", s, For(old, "sn0001", nonce, 2), now.Add(time.Hour), NoMatch},
		{"legacy, not accepted by the record", s, Legacy(secret, "sn0001", 2), now, NoMatch},
		{"legacy, accepted by the record", Subject{ID: "sn0001", Nonce: nonce, Generation: 2, Legacy: true}, Legacy(secret, "sn0001", 2), now, LegacyFormat},
		{"legacy of the previous secret", Subject{ID: "sn0001", Nonce: nonce, Generation: 2, Legacy: true}, Legacy(old, "sn0001", 2), now, LegacyFormat},
		{"legacy of another generation", Subject{ID: "sn0001", Nonce: nonce, Generation: 2, Legacy: true}, Legacy(secret, "sn0001", 1), now, NoMatch},
		{"record without a nonce", Subject{ID: "sn0001", Generation: 2}, Legacy(secret, "sn0001", 2), now, LegacyFormat},
		{"empty", s, "", now, NoMatch},
	}
	for _, tt := range tests {
		if got := k.Match(tt.s, tt.tok, tt.at); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Without a previous secret nothing but the current one opens anything.
	if got := (Keys{Current: secret}).Match(s, For(nil, "sn0001", nonce, 2), now); got != NoMatch {
		t.Errorf("an empty previous secret matched: %v", got)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzValid(f *testing.F) {
	f.Add("sn0001", nonce, 0, "")
	f.Add("sn0001", "", 1, "00")
	f.Fuzz(func(t *testing.T, id, n string, gen int, tok string) {
		want := For(secret, id, n, gen)
		if got := Valid(secret, id, n, gen, tok); got != (tok == want && n != "") {
			t.Fatalf("Valid(%q, %q, %d, %q) = %v", id, n, gen, tok, got)
		}
	})
}
