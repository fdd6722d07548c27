package render

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The template functions that build file contents for an Ignition config
// (README, "Templates"). dataurl's output is plain ASCII with no quote;
// keyvalues keeps quotes and non-ASCII text as they are (only what could
// start a new line or a new key is escaped), so its output goes through
// dataurl, yaml or json like every other value.

// dataURL is s as an RFC 2397 data URL ("data:,…"), the form Ignition
// takes file contents in (storage.files[].contents.source). Every byte
// that is not an unreserved URL character or "/" is percent-encoded, so
// the text stays readable in the served config and nothing in s (a quote,
// a newline, a "#") can end the value it stands in. A []byte is taken as
// it is.
func dataURL(v any) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case []byte:
		s = string(x)
	default:
		return "", fmt.Errorf("dataurl: want a string, got %T", v)
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len("data:,") + len(s)*3)
	b.WriteString("data:,")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '-' || c == '.' || c == '_' || c == '~' ||
			'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String(), nil
}

// keyValues is m as KEY=VALUE lines sorted by key, each ending in a
// newline: the machine's metadata as /etc/mayu/metadata carries it
// (rule-core=true, what fleet metadata used to say). Whatever a key or
// value holds, an entry is exactly one line: a backslash, a newline, a
// carriage return, a tab and every other unprintable rune are written as
// a backslash escape (\\ \n \r \t \uXXXX), and "=" in a key as \=, so the
// first "=" not after a backslash ends the key. Invalid UTF-8 becomes
// U+FFFD.
func keyValues(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(escapeLine(k, true))
		b.WriteByte('=')
		b.WriteString(escapeLine(m[k], false))
		b.WriteByte('\n')
	}
	return b.String()
}

func escapeLine(s string, key bool) string {
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, width := utf8.DecodeRuneInString(s[i:])
		w = width
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '=' && key:
			b.WriteString(`\=`)
		case r == utf8.RuneError && width == 1:
			b.WriteRune(utf8.RuneError)
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	return b.String()
}

// replicas is a URL of mayu's (one of .URLs, on the replica that rendered
// it) on each replica of bases, the base URLs of all replicas separated by
// spaces (the template variable mayu_urls): the same path and query,
// token included, so a node can try the next replica when one does not
// answer. Empty bases: just u. `{{join (replicas .URLs.BootComplete
// (index .Vars "mayu_urls")) "\n"}}`.
func replicas(u, bases string) ([]string, error) {
	fields := strings.Fields(bases)
	if len(fields) == 0 {
		return []string{u}, nil
	}
	parsed, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	tail := parsed.EscapedPath()
	if parsed.RawQuery != "" {
		tail += "?" + parsed.RawQuery
	}
	out := make([]string, 0, len(fields))
	for _, base := range fields {
		b, err := url.Parse(base)
		if err != nil || (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" || b.RawQuery != "" || b.Fragment != "" {
			return nil, fmt.Errorf("replicas: %q is not a base URL like http://10.0.3.2:4081", base)
		}
		out = append(out, strings.TrimSuffix(base, "/")+tail)
	}
	return out, nil
}
