package token

import (
	"encoding/hex"
	"testing"
)

var secret = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func TestForIsStable(t *testing.T) {
	a := For(secret, "sn0001", 0)
	b := For(append([]byte(nil), secret...), "sn0001", 0)
	if a != b {
		t.Fatalf("same id and generation gave %q and %q", a, b)
	}
	if len(a) != 64 {
		t.Fatalf("token %q is %d characters, want 64", a, len(a))
	}
	if _, err := hex.DecodeString(a); err != nil {
		t.Fatalf("token %q is not hex: %v", a, err)
	}
}

func TestForDiffers(t *testing.T) {
	base := For(secret, "sn0001", 1)
	others := map[string]string{
		"generation":   For(secret, "sn0001", 2),
		"id":           For(secret, "sn0002", 1),
		"secret":       For([]byte("another secret, another cluster, another token"), "sn0001", 1),
		"id/gen split": For(secret, "sn000", 11), // "sn000"+"11" vs "sn0001"+"1"
		"prefix id":    For(secret, "sn00011", 1),
	}
	for what, tok := range others {
		if tok == base {
			t.Errorf("a different %s gave the same token", what)
		}
	}
}

func TestValid(t *testing.T) {
	tok := For(secret, "sn0001", 3)
	if !Valid(secret, "sn0001", 3, tok) {
		t.Fatal("the machine's own token is refused")
	}
	tests := map[string]struct {
		secret []byte
		id     string
		gen    int
		tok    string
	}{
		"empty token":           {secret, "sn0001", 3, ""},
		"wrong token":           {secret, "sn0001", 3, "deadbeef"},
		"another machine's":     {secret, "sn0001", 3, For(secret, "sn0002", 3)},
		"older generation":      {secret, "sn0001", 3, For(secret, "sn0001", 2)},
		"truncated":             {secret, "sn0001", 3, tok[:len(tok)-1]},
		"half":                  {secret, "sn0001", 3, tok[:32]},
		"extended":              {secret, "sn0001", 3, tok + "0"},
		"upper-cased":           {secret, "sn0001", 3, upper(tok)},
		"empty secret":          {nil, "sn0001", 3, For(nil, "sn0001", 3)},
		"token of other secret": {secret, "sn0001", 3, For([]byte("x"), "sn0001", 3)},
	}
	for name, tt := range tests {
		if tt.tok == tok && name != "upper-cased" {
			t.Fatalf("%s: test token equals the real one", name)
		}
		if Valid(tt.secret, tt.id, tt.gen, tt.tok) {
			t.Errorf("%s: Valid accepted %q", name, tt.tok)
		}
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
	f.Add("sn0001", 0, "")
	f.Add("sn0001", 1, "00")
	f.Fuzz(func(t *testing.T, id string, gen int, tok string) {
		want := For(secret, id, gen)
		if got := Valid(secret, id, gen, tok); got != (tok == want) {
			t.Fatalf("Valid(%q, %d, %q) = %v", id, gen, tok, got)
		}
		if !Valid(secret, id, gen, want) {
			t.Fatalf("own token of %q/%d refused", id, gen)
		}
	})
}
