package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// clean makes a string safe to print on a terminal: one holding a control
// character, an invalid UTF-8 byte or any other non-printable rune (an
// escape sequence, a tab that would break a table, a bidi override) is
// printed quoted and escaped as Go does ("\x1b[31m"); a plain one is
// printed as it is. Everything a machine sent goes through it in table and
// text output.
func clean(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return strconv.Quote(s)
			}
		}
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// dash is a cleaned string, "-" when empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

// cleanJoin cleans each element and joins them.
func cleanJoin(ss []string, sep string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clean(s)
	}
	return strings.Join(out, sep)
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // a terminal, not a web page
	return enc.Encode(v)
}

// printYAML prints v as YAML with the field names of its JSON, so that
// -o yaml and -o json name every field alike: the JSON is read back as a
// YAML node (JSON is YAML) and written in block style.
func (c *cli) printYAML(v any) error {
	return writeYAML(c.stdout, v)
}

func writeYAML(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(yamlSafe(data), &n); err != nil {
		return err
	}
	blockStyle(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// yamlSafe escapes in JSON what YAML does not take raw (DEL, the C1
// controls, U+FFFE and U+FFFF; JSON leaves them raw in its strings): the
// parser would refuse the whole document for one such rune in a value a
// machine sent.
func yamlSafe(data []byte) []byte {
	var out []byte
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r >= 0x7f && r <= 0x9f && r != 0x85 || r == 0xfffe || r == 0xffff {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, data[i:i+size]...)
		}
		i += size
	}
	return out
}

// blockStyle drops the flow style and quotes JSON brings; the encoder
// quotes again whatever needs it (control characters, "true" as a string).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, child := range n.Content {
		blockStyle(child)
	}
}

// printData prints v as JSON or YAML when -o asks for one; it reports
// whether it did.
func (c *cli) printData(v any) (bool, error) {
	switch c.format() {
	case "json":
		return true, c.printJSON(v)
	case "yaml":
		return true, c.printYAML(v)
	}
	return false, nil
}

// age is a short duration like kubectl shows: 42s, 3m12s, 5h3m, 3d4h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0 // clocks of replicas and operator differ a little
	}
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// when is a time with how long ago it was.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), age(now.Sub(t)))
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// terminal guards what mayuctl writes to stdout and stderr, whatever the
// path: a control character that a terminal obeys (C0 but tab and
// newline, DEL, the C1 controls such as the one-rune CSI) leaves as a
// \u00XX escape, an invalid UTF-8 byte as \xNN. clean escapes each field a
// machine sent readably; this is the net under it, for a path that misses
// it. In JSON and YAML output such a rune can only stand inside a string
// (JSON) or a double-quoted scalar (YAML), where \u00XX means the same.
type terminal struct {
	w       io.Writer
	partial []byte // an incomplete UTF-8 sequence that ended the last write
}

func (t *terminal) Write(p []byte) (int, error) {
	data := append(t.partial, p...)
	t.partial = nil
	if n := incompleteTail(data); n > 0 {
		t.partial = append([]byte(nil), data[len(data)-n:]...)
		data = data[:len(data)-n]
	}
	if _, err := t.w.Write(guard(data)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes an incomplete UTF-8 sequence left at the end, escaped.
func (t *terminal) Flush() {
	if len(t.partial) > 0 {
		t.w.Write(guard(t.partial))
		t.partial = nil
	}
}

// incompleteTail is the length of a UTF-8 sequence that b ends in the
// middle of (0 if none): it is completed by the next write.
func incompleteTail(b []byte) int {
	for n := 1; n <= 3 && n <= len(b); n++ {
		if utf8.RuneStart(b[len(b)-n]) {
			if !utf8.FullRune(b[len(b)-n:]) {
				return n
			}
			return 0
		}
	}
	return 0
}

// guard escapes what a terminal would obey in b.
func guard(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = fmt.Appendf(out, `\x%02x`, b[i])
		case r < 0x20 && r != '\n' && r != '\t', r >= 0x7f && r < 0xa0:
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}
