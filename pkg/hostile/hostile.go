// Package hostile handles text that came from a machine on the boot network
// (a serial, a path, a DHCP hostname, a failure reason): hostile until
// checked. Clip keeps it from flooding an answer, a log line or a record.
package hostile

import "unicode/utf8"

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
