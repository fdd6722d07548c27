package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The quoting functions of the templates. A value from metadata, profile
// tags, template vars or the machine goes into a rendered file only through
// one of them, so that no value, whatever it holds, adds a key to a YAML or
// JSON document or a command to a shell script. Each takes any value
// (string, number, bool, list, map); the Ignition templates build on them.

// toJSON is v as compact JSON on one line: `{{json .Machine.Metadata}}`,
// `"hostname": {{json .Machine.Hostname}}`. Every rune that is not
// printable is written as a \u escape, so the document survives a terminal
// and a line-based reader; <, > and & stay as they are.
func toJSON(v any) (string, error) {
	data, err := marshal(v)
	if err != nil {
		return "", err
	}
	return escapeUnprintable(data, false), nil
}

// toYAML is v as a YAML flow value on one line: a string double-quoted, a
// list [..], a map {..}. It is JSON with YAML's escapes (JSON is YAML's
// flow style), so it may stand wherever a YAML value does: after `key: `,
// as a list item after `- `, or as a key.
func toYAML(v any) (string, error) {
	data, err := marshal(v)
	if err != nil {
		return "", err
	}
	return escapeUnprintable(data, true), nil
}

func marshal(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// escapeUnprintable escapes what encoding/json leaves raw and is not
// printable (DEL, C1 controls, bidi overrides, private use): such a rune
// can only stand inside a JSON string, where a \u escape means the same.
// YAML takes \U for a rune beyond 16 bits, JSON a surrogate pair.
func escapeUnprintable(s string, yaml bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == ' ' || r == utf8.RuneError || unicode.IsPrint(r):
			// json.Marshal replaced invalid UTF-8 with U+FFFD already.
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		case yaml:
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			r1, r2 := utf16Pair(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		}
	}
	return b.String()
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// errNUL: a shell variable cannot hold a NUL byte, and a shell reading a
// script may cut a line at one.
var errNUL = errors.New("shell: a value with a NUL byte cannot be quoted for a shell")

// shell is v as shell words, safe anywhere a POSIX shell takes a word: a
// string (or number, bool) becomes one single-quoted word, a list one word
// per element (`for d in {{shell .Network.DNS}}`), a map or struct one
// word of its JSON. nil is the empty word (two single quotes).
func shell(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "''", nil
	case string:
		return shellWord(x)
	case []string:
		words := make([]string, len(x))
		for i, s := range x {
			w, err := shellWord(s)
			if err != nil {
				return "", err
			}
			words[i] = w
		}
		return strings.Join(words, " "), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			return shellWord(string(rv.Bytes()))
		}
		words := make([]string, rv.Len())
		for i := range words {
			w, err := shell(rv.Index(i).Interface())
			if err != nil {
				return "", err
			}
			words[i] = w
		}
		return strings.Join(words, " "), nil
	case reflect.Map, reflect.Struct, reflect.Pointer, reflect.Interface:
		s, err := marshal(v)
		if err != nil {
			return "", err
		}
		return shellWord(s)
	}
	return shellWord(fmt.Sprint(v))
}

// shellWord single-quotes s: inside single quotes a POSIX shell gives no
// character a meaning; a single quote in s ends the quoted part, is
// written escaped (\') and the quoted part starts again.
func shellWord(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errNUL
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// shellquote is the older name of shell for a string, kept for the
// operators' templates that use it.
func shellquote(s string) (string, error) { return shellWord(s) }
