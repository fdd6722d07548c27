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
	if err := yaml.Unmarshal(data, &n); err != nil {
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
