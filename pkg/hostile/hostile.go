// Package hostile handles text that came from a machine on the boot network
// (a serial, a path, a DHCP hostname, a failure reason): hostile until
// checked. It has one function for each way such text may go on:
//
//   - Text is how it is stored (in a machine record, a lease): every
//     control character escaped, bounded in size, so that no reader of
//     etcd, a log or mayuctl gets a terminal escape sequence from it.
//   - Plain is the only way it enters a script a machine runs (iPXE, the
//     first-stage shell script): a strict allow-list of letters, digits,
//     space and a few harmless punctuation marks, nothing else.
//   - Clip keeps it from flooding an answer, a log line or a record.
package hostile

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clip is s cut to at most n bytes on a rune boundary, with "..." when cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Escape is s with every rune that is not printable (control characters,
// C1 controls such as the one-byte CSI, bidi overrides, line and
// paragraph separators) and every invalid UTF-8 byte written as a Go
// escape: \x1b, \n, \u202e. Printable text, a backslash included, stays as it
// is, so Escape(Escape(s)) == Escape(s): stored text can be escaped again
// at every layer without growing.
func Escape(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// printable reports whether s is valid UTF-8 of printable runes only (the
// space is printable, a tab or newline is not).
func printable(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Text is what mayu stores of text a machine sent: escaped, then clipped
// to n bytes (plus "..." when cut). Like Escape it is idempotent, so
// each layer a text passes may apply it: what Text cut already (at most
// n+3 bytes, ending in "...") stays as it is.
func Text(s string, n int) string {
	e := Escape(s)
	if len(e) <= n+3 && strings.HasSuffix(e, "...") {
		return e
	}
	return Clip(e, n)
}

// PlainMax bounds what Plain returns, "..." included: a line on a
// machine's console, not a page.
const PlainMax = 300

// plainPunct is the punctuation Plain keeps: none of it means anything to
// iPXE (no $ expansion, no #, &&, || or ; to end a command, no quotes or
// backslash) or to a shell inside single quotes.
const plainPunct = " .,:_-/()+=@"

// Plain is s reduced to a strict allow-list for a script a machine runs:
// ASCII letters and digits, space and the punctuation ".,:_-/()+=@";
// every other rune (control characters, quotes, $, #, &, |, ;, non-ASCII)
// becomes '_'. The result is at most PlainMax bytes and can never end a
// command, start a comment or expand a setting in iPXE, nor leave a
// single-quoted shell word.
func Plain(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(plainPunct, r)) {
			return r
		}
		return '_'
	}, s)
	return Clip(s, PlainMax-3)
}
