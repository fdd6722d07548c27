// Package ignition turns what an operator's template rendered (YAML or
// JSON that mirrors Ignition spec 3.3 key for key) into the Ignition JSON a
// machine is served, and refuses anything Ignition itself would not take
// exactly as written.
//
// The conversion goes through the Ignition library's own types
// (github.com/coreos/ignition/v2/config/v3_3): the document is decoded,
// parsed and validated by the same code Flatcar's Ignition runs, and the
// JSON served is those types marshalled again, so what is served is what
// the operator wrote, no more and no less. The original mayu's own YAML to
// Ignition conversion silently dropped keys it did not know (users lost
// their SSH keys that way); here an unknown key, which Ignition reports
// only as a warning, is an error.
//
// Spec 3.3 is what Debian's Ignition 2.14 and current Flatcar both accept
// (2.14 refuses 3.4); the library's top-level parser would translate to a
// newer spec, so only config/v3_3 is used.
package ignition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	v33 "github.com/coreos/ignition/v2/config/v3_3"
	"github.com/coreos/ignition/v2/config/v3_3/types"
	"github.com/coreos/vcontext/report"
	"go.yaml.in/yaml/v3"
)

// Version is the Ignition spec version mayu renders.
const Version = "3.3.0"

// MaxSize bounds a rendered config: each is rendered and validated for a
// machine whenever it asks, on the replica that also answers DHCP, and
// Ignition configs are small (file contents that are not belong at a URL).
const MaxSize = 2 << 20

// Problem is one thing wrong with a config, at a path of the document
// ("$.storage.files.0.path"; "$" for the document itself).
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// InvalidError is a config Ignition would refuse or read differently than
// it was written. Problems are sorted by path.
type InvalidError struct {
	Problems []Problem
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	head := "invalid Ignition " + Version + " config: "
	if len(parts) > 1 {
		// The count first: a machine's failure reason is cut short.
		head = fmt.Sprintf("invalid Ignition %s config (%d problems): ", Version, len(parts))
	}
	return head + strings.Join(parts, "; ")
}

// Result is a config that passed: its Ignition JSON and the warnings
// Ignition gave that do not change its meaning.
type Result struct {
	JSON     []byte
	Warnings []Problem
}

// Convert turns src (YAML or JSON mirroring Ignition spec 3.3) into
// validated Ignition JSON. A document that is not valid YAML, has
// duplicate or non-string keys, an unknown key, a value of the wrong type,
// another spec version, or anything Ignition's validation refuses is an
// *InvalidError naming each problem by path.
func Convert(src []byte) (Result, error) {
	if len(src) > MaxSize {
		return Result{}, &InvalidError{Problems: []Problem{{Path: "$", Message: fmt.Sprintf("rendered to %d bytes, more than %d: serve big file contents from a URL (contents.source) rather than inline", len(src), MaxSize)}}}
	}
	raw, err := toJSON(src)
	if err != nil {
		return Result{}, err
	}
	return Validate(raw)
}

// Validate checks Ignition JSON with the library and returns it as the
// library's types marshal it.
func Validate(raw []byte) (Result, error) {
	// What Ignition's parser says only of the whole document ("$"), said
	// of the key it is about: a value of the wrong type, a version other
	// than the one mayu renders.
	if p, ok := precheck(raw); !ok {
		return Result{}, &InvalidError{Problems: []Problem{p}}
	}
	cfg, rpt, err := v33.Parse(raw)
	var problems, warnings []Problem
	for _, e := range rpt.Entries {
		p := Problem{Path: e.Context.String(), Message: e.Message}
		switch {
		case e.Kind.IsFatal():
			problems = append(problems, p)
		case e.Kind == report.Warn && strings.HasPrefix(e.Message, "unused key "):
			p.Message = "unknown key " + strings.TrimPrefix(e.Message, "unused key ") + " (not in Ignition spec " + Version + ")"
			problems = append(problems, p)
		case e.Kind == report.Warn && strings.Contains(e.Message, "Unused keys may not be reported"):
			// Ignition could not look for unknown keys here: mayu
			// cannot promise that nothing written is lost.
			problems = append(problems, p)
		case e.Kind == report.Warn:
			warnings = append(warnings, p)
		}
	}
	if err != nil && len(problems) == 0 {
		msg := err.Error()
		if strings.Contains(msg, "unsupported config version") {
			msg = fmt.Sprintf("ignition.version must be %q (the spec Debian's Ignition 2.14 and Flatcar both accept): %s", Version, msg)
		}
		problems = append(problems, Problem{Path: "$", Message: msg})
	}
	if len(problems) > 0 {
		sortProblems(problems)
		return Result{}, &InvalidError{Problems: problems}
	}
	out, err := marshal(cfg)
	if err != nil {
		return Result{}, err
	}
	sortProblems(warnings)
	return Result{JSON: out, Warnings: warnings}, nil
}

// precheck decodes raw into the spec's types as Ignition's parser will,
// to name the key of a value of the wrong type, and checks
// ignition.version.
func precheck(raw []byte) (Problem, bool) {
	var cfg types.Config
	err := json.Unmarshal(raw, &cfg)
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return Problem{Path: "$." + typeErr.Field, Message: fmt.Sprintf("got %s, Ignition wants %s", typeErr.Value, kind(typeErr.Type))}, false
	case errors.As(err, &typeErr):
		return Problem{Path: "$", Message: fmt.Sprintf("got %s, Ignition wants %s", typeErr.Value, kind(typeErr.Type))}, false
	case err != nil:
		return Problem{}, true // Ignition's parser says it
	case cfg.Ignition.Version == "":
		return Problem{Path: "$.ignition.version", Message: fmt.Sprintf("missing: set it to %q", Version)}, false
	case cfg.Ignition.Version != Version:
		return Problem{Path: "$.ignition.version", Message: fmt.Sprintf("is %q; mayu renders spec %s, the one both Debian's Ignition 2.14 (which refuses 3.4.0 and later) and current Flatcar accept", cfg.Ignition.Version, Version)}, false
	}
	return Problem{}, true
}

// kind names what a value of Go type t is in JSON.
func kind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

func marshal(cfg types.Config) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
}

// toJSON decodes a YAML (or JSON) document into plain values and encodes
// them as JSON. YAML allows what JSON cannot say (non-string keys, several
// documents, aliases that make a value twice); each is refused rather than
// guessed at.
func toJSON(src []byte) ([]byte, error) {
	var v any
	var err error
	if t := bytes.TrimLeft(src, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		// JSON is read as JSON: YAML's parser refuses JSON's surrogate
		// pair escapes (a rune beyond 16 bits, as the json function
		// writes an unprintable one).
		v, err = fromJSON(src)
	} else {
		v, err = fromYAML(src)
	}
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		// .inf and .nan are YAML numbers JSON has no word for.
		return nil, &InvalidError{Problems: []Problem{{Path: "$", Message: "not expressible in JSON: " + err.Error()}}}
	}
	return out, nil
}

func invalid(path, format string, a ...any) error {
	return &InvalidError{Problems: []Problem{{Path: path, Message: fmt.Sprintf(format, a...)}}}
}

func fromYAML(src []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, invalid("$", "not valid YAML or JSON: %v", err)
	}
	// Anything after the first document is refused, parsable or not: a
	// second document that failed to parse would otherwise vanish, and
	// with it whatever the operator wrote there (SSH keys, say).
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err == nil:
		return nil, invalid("$", "more than one YAML document (a second starts at line %d)", extra.Line)
	default:
		return nil, invalid("$", "more than one YAML document, and the second is not valid YAML: %v", err)
	}
	return plain(&doc, "$")
}

// fromJSON decodes one JSON object, refusing duplicate keys (which
// encoding/json would resolve silently, the last one winning) and
// anything after it.
func fromJSON(src []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	v, err := jsonValue(dec, "$")
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("$", "not valid JSON: more after the object (at byte %d)", dec.InputOffset())
	}
	return v, nil
}

func jsonValue(dec *json.Decoder, path string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid(path, "not valid JSON: %v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, invalid(path, "not valid JSON: %v", err)
				}
				k := kt.(string) // the decoder allows only strings as keys
				if seen[k] {
					return nil, invalid(path, "key %q appears twice", k)
				}
				seen[k] = true
				child, err := jsonValue(dec, path+"."+k)
				if err != nil {
					return nil, err
				}
				if child != nil { // null is an absent key, as in YAML
					m[k] = child
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, invalid(path, "not valid JSON: %v", err)
			}
			return m, nil
		case '[':
			s := []any{}
			for i := 0; dec.More(); i++ {
				p := fmt.Sprintf("%s.%d", path, i)
				child, err := jsonValue(dec, p)
				if err != nil {
					return nil, err
				}
				if child == nil {
					return nil, invalid(p, "a list item is empty (null)")
				}
				s = append(s, child)
			}
			if _, err := dec.Token(); err != nil {
				return nil, invalid(path, "not valid JSON: %v", err)
			}
			return s, nil
		}
		return nil, invalid(path, "not valid JSON: unexpected %v", t)
	default:
		return t, nil // string, json.Number, bool or nil
	}
}

// plain converts a YAML node into map/slice/scalar values, naming the path
// of what cannot be JSON.
func plain(n *yaml.Node, path string) (any, error) {
	bad := func(format string, a ...any) error {
		return &InvalidError{Problems: []Problem{{Path: path, Message: fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, a...)}}}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, bad("empty document")
		}
		return plain(n.Content[0], path)
	case yaml.AliasNode:
		return nil, bad("YAML aliases are not allowed: write the value out")
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		seen := map[string]bool{} // keys whose null value was dropped
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				return nil, bad("keys must be plain strings")
			}
			if _, dup := m[k.Value]; dup || seen[k.Value] {
				return nil, bad("key %q appears twice", k.Value)
			}
			child, err := plain(v, path+"."+k.Value)
			if err != nil {
				return nil, err
			}
			if child == nil {
				// `key:` with no value (a template's empty
				// branch): Ignition reads a null as absent, but
				// cannot then check the keys around it.
				seen[k.Value] = true
				continue
			}
			m[k.Value] = child
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			p := fmt.Sprintf("%s.%d", path, i)
			child, err := plain(c, p)
			if err != nil {
				return nil, err
			}
			if child == nil {
				// `- {{with ...}}...{{end}}` left empty: Ignition would
				// get "" (a group, a kernel argument) and fail on the
				// machine, not here.
				return nil, invalid(p, "line %d: a list item is empty (null)", c.Line)
			}
			s = append(s, child)
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool", "!!int", "!!float":
			var v any
			if err := n.Decode(&v); err != nil {
				return nil, bad("%v", err)
			}
			return v, nil
		case "!!str":
			return n.Value, nil
		default:
			// !!timestamp, !!binary and custom tags have no JSON
			// meaning: Ignition would get a string it did not expect.
			return nil, bad("value %q has YAML type %s; quote it to make it a string", n.Value, n.ShortTag())
		}
	}
	return nil, bad("unexpected YAML node")
}

// IsInvalid reports whether err is a config that failed validation (as
// opposed to, say, a template that failed to execute).
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}
