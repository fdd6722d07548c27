package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkShape walks the parsed YAML alongside the Go type it is about to be
// decoded into and reports, each with its line and key path, the mistakes an
// operator makes most: a misspelt key, a malformed address, subnet,
// duration, number or true/false, a single value where a list belongs.
//
// yaml's decoder (run afterwards, with KnownFields) refuses the same things,
// but it names a Go type ("field lease_tme not found in type config.Pool")
// rather than the place in the file, and it gives up at the first bad
// address without a line number. This pass lets one run of mayu list every
// such problem in words that point into the file.
func checkShape(root *yaml.Node) []error {
	var s shapeChecker
	s.walk(root, reflect.TypeFor[Config](), "")
	return s.errs
}

type shapeChecker struct {
	errs []error
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	optValueType = reflect.TypeFor[OptionValue]()
)

func (s *shapeChecker) addf(n *yaml.Node, path, format string, args ...any) {
	s.errs = append(s.errs, fmt.Errorf("line %d: %s: %s", n.Line, describe(path), fmt.Sprintf(format, args...)))
}

func (s *shapeChecker) walk(n *yaml.Node, t reflect.Type, path string) {
	switch {
	case n.Kind == yaml.AliasNode:
		// The anchor an alias repeats is checked where it is defined.
		// Following aliases here would let a small hostile file make this
		// walk exponential; yaml's decoder bounds alias expansion itself.
		return
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return // an empty value leaves the field unset: its default applies
	}

	switch {
	case t == durationType:
		if s.scalar(n, path) {
			// yaml only decodes a duration from a string, so a bare 3600
			// is refused there too; say how to write it instead.
			if _, err := time.ParseDuration(n.Value); n.ShortTag() != "!!str" || err != nil {
				s.addf(n, path, "%q is not a duration; write it with a unit, e.g. 90s, 30m or 1h", n.Value)
			}
		}
	case t == addrType:
		if s.scalar(n, path) && n.Value != "" {
			if _, err := netip.ParseAddr(n.Value); err != nil {
				s.addf(n, path, "%q is not an IP address", n.Value)
			}
		}
	case t == prefixType:
		if s.scalar(n, path) && n.Value != "" {
			if _, err := netip.ParsePrefix(n.Value); err != nil {
				s.addf(n, path, "%q is not a subnet in CIDR notation, e.g. 10.99.0.0/24", n.Value)
			}
		}
	case t == optValueType:
		// One value, or a list of values (type ips).
		if n.Kind == yaml.SequenceNode {
			for i, item := range n.Content {
				s.scalar(item, fmt.Sprintf("%s[%d]", path, i))
			}
		} else {
			s.scalar(n, path)
		}
	case t.Kind() == reflect.Pointer:
		s.walk(n, t.Elem(), path) // an optional value: checked like the value itself
	case isNumber(t.Kind()), t.Kind() == reflect.Bool:
		if s.scalar(n, path) {
			s.number(n, t, path)
		}
	case t.Kind() == reflect.Struct:
		s.mapping(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			s.addf(n, path, "expected a list, found %s; write [%s] or one \"- item\" per line", kindOf(n), n.Value)
			return
		}
		for i, item := range n.Content {
			s.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			s.addf(n, path, "expected key: value pairs, found %s", kindOf(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			s.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	default:
		s.scalar(n, path)
	}
}

// number checks a whole number, a number or a bool by decoding it the way
// yaml will (so "0x10" and "yes" stay accepted exactly where yaml accepts
// them), and says what was wanted instead of yaml's "cannot unmarshal !!str
// into int", which names neither the key nor, after the first, any other
// problem in the file. It is stricter than yaml in one place: yaml
// truncates 1500.5 into an int without a word; here it is refused.
func (s *shapeChecker) number(n *yaml.Node, t reflect.Type, path string) {
	k := t.Kind()
	whole := k >= reflect.Int && k <= reflect.Uint64
	if whole && n.ShortTag() == "!!float" {
		if strings.Trim(n.Value, "+-0123456789_") == "" {
			// Digits only, yet not an int to yaml: too long for 64 bits.
			s.addf(n, path, "%q is out of range", n.Value)
		} else {
			s.addf(n, path, "%q is not a whole number", n.Value)
		}
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err == nil {
		return
	}
	plain := *n
	plain.Tag, plain.Style = "", 0
	switch {
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && plain.Decode(reflect.New(t).Interface()) == nil &&
		!(whole && plain.ShortTag() == "!!float"):
		// "4011": text to yaml, whatever it looks like.
		s.addf(n, path, "%q is in quotes, which makes it text; write it without them", n.Value)
	case k == reflect.Bool:
		s.addf(n, path, "%q is not true or false", n.Value)
	case whole && n.ShortTag() == "!!int" && k >= reflect.Uint && strings.HasPrefix(n.Value, "-"):
		s.addf(n, path, "%q is negative; it must be 0 or more", n.Value)
	case whole && n.ShortTag() == "!!int":
		s.addf(n, path, "%q is out of range", n.Value)
	case whole:
		s.addf(n, path, "%q is not a whole number", n.Value)
	default:
		s.addf(n, path, "%q is not a number", n.Value)
	}
}

func isNumber(k reflect.Kind) bool {
	return (k >= reflect.Int && k <= reflect.Uint64) || k == reflect.Float32 || k == reflect.Float64
}

// scalar reports whether n is a single value, as every leaf of the config is.
func (s *shapeChecker) scalar(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode {
		s.addf(n, path, "expected a single value, found %s", kindOf(n))
		return false
	}
	return true
}

// mapping checks the keys of n against the yaml tags of struct type t.
func (s *shapeChecker) mapping(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		s.addf(n, path, "expected key: value pairs, found %s", kindOf(n))
		return
	}
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i], n.Content[i+1]
		if key.ShortTag() == "!!merge" {
			// "<<: {...}" merges its keys into this mapping; check them here.
			if value.Kind == yaml.MappingNode {
				s.mapping(value, t, path)
			}
			continue
		}
		if key.Kind != yaml.ScalarNode {
			s.addf(key, path, "expected a plain key name, found %s", kindOf(key))
			continue
		}
		ft, ok := fields[key.Value]
		if !ok {
			where := "in " + path
			if path == "" {
				where = "at the top level"
			}
			msg := fmt.Sprintf("line %d: unknown key %q %s", key.Line, key.Value, where)
			if guess := closest(key.Value, fields); guess != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", guess)
			}
			s.errs = append(s.errs, fmt.Errorf("%s", msg))
			continue
		}
		s.walk(value, ft, join(path, key.Value))
	}
}

// yamlFields maps the YAML key of each field of struct type t to its type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml's own rule for untagged fields
		}
		fields[name] = f.Type
	}
	return fields
}

// closest returns the known key nearest to a misspelt one, if it is near
// enough to be a plausible typo.
func closest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3 // at most two edits away
	for name := range fields {
		if d := editDistance(key, name); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "key: value pairs"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
