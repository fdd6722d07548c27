package render

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/pkg/config"
)

// Values an attacker (or a careless operator) may put into metadata, tags
// or template vars to add a key to the final config or a command to the
// first stage.
var evilValues = []string{
	"x\nssh_authorized_keys: [evil]",
	`"}, "evil": {`,
	`", "evil": "`,
	"x\"\nevil: 1\n#",
	"'; touch /tmp/pwned; '",
	"$(touch /tmp/pwned) `id` ${HOME}",
	"line\r\nsep\u2028para\u2029nel\u0085del\x7f",
	"esc\x1b[31m c1\u009b bidi\u202e tag\U000e0001 pua\U000f0000",
	"bad utf-8 \xff\xfe",
	"{evil: 1}", "[evil]", "&anchor *alias !!binary", "- item", "? key", "null", "true", "0x10", "1e3", "~",
	"key: value", "#comment", "| block", "> folded", "@at `tick", "%TAG", "---", "...",
}

// yaml and json turn any value into one that parses back to itself.
func TestQuoteRoundTrip(t *testing.T) {
	var values []any
	for _, s := range evilValues {
		values = append(values, s)
	}
	values = append(values, 42, -1.5, true, nil, []string{"a", "b\nc"}, map[string]string{"k\n:": "v\"}"},
		map[string]any{"n": 1, "l": []any{"x", 2.5, false}, "m": map[string]any{"deep": "\x1b"}})
	for _, v := range values {
		want := normalize(t, v)
		j, err := toJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		var gotJ any
		if err := json.Unmarshal([]byte(j), &gotJ); err != nil || !reflect.DeepEqual(gotJ, want) {
			t.Errorf("json %#v = %s: reads back as %#v (%v)", v, j, gotJ, err)
		}
		y, err := toYAML(v)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal([]byte("v: "+y), &doc); err != nil {
			t.Errorf("yaml %#v = %s: not YAML: %v", v, y, err)
			continue
		}
		gotY := jsonShape(t, doc["v"])
		if !reflect.DeepEqual(gotY, want) {
			t.Errorf("yaml %#v = %s: reads back as %#v", v, y, gotY)
		}
		for _, out := range []string{j, y} {
			if strings.ContainsAny(out, "\n\r\x1b\x7f\u0085\u009b\u2028\u202e") {
				t.Errorf("%#v quoted as %q: not one printable line", v, out)
			}
		}
	}
}

// normalize is v as encoding/json reads it back (invalid UTF-8 becomes
// U+FFFD, numbers float64).
func normalize(t *testing.T, v any) any {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(data, &out)
	return out
}

// jsonShape is a YAML-decoded value in the shapes encoding/json uses.
func jsonShape(t *testing.T, v any) any {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(data, &out)
	return out
}

// The finding: metadata could inject keys into the final config.
// Whatever the metadata, tags and template vars hold, the rendered final
// config parses to exactly the keys the template names, each holding the
// value given.
func TestFinalConfigKeysCannotBeInjected(t *testing.T) {
	r := shipped(t, cluster())
	for _, evil := range evilValues {
		checkFinalConfig(t, r, "rule-core", evil)
		checkFinalConfig(t, r, evil, "v")
	}
}

func FuzzFinalConfigKeys(f *testing.F) {
	for _, evil := range evilValues {
		f.Add("k", evil)
	}
	r := shipped(f, cluster())
	f.Fuzz(func(t *testing.T, k, v string) {
		if len(k) > 63 {
			// Metadata and tag keys are at most 63 bytes (the admin API
			// and the config check it); YAML takes a key of at most 1024
			// characters on one line, and 63 bytes escaped stay below it.
			k = k[:63]
		}
		checkFinalConfig(t, r, k, v)
	})
}

func checkFinalConfig(t *testing.T, r *Renderer, k, v string) {
	t.Helper()
	m := Sample()
	m.Metadata = map[string]string{k: v}
	c := r.Context(m, "tok", "http://10.0.3.250:4081")
	c.Vars["ntp"], c.Vars["ssh_authorized_key"] = v, v
	out, err := r.FinalConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("metadata %q=%q: the final config is not YAML: %v\n%s", k, v, err, out)
	}
	metaKey := normalize(t, "metadata_"+k).(string) // invalid UTF-8 becomes U+FFFD
	want := []string{"address", "boot_complete_url", "dns", "gateway", "hostname", "id", "machine_id", metaKey,
		"netmask", "ntp", "profile", "ssh_authorized_key"}
	sort.Strings(want)
	var got []string
	for key := range doc {
		got = append(got, key)
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metadata %q=%q: keys %q, want %q\n%s", k, v, got, want, out)
	}
	wantV := normalize(t, v)
	for _, key := range []string{metaKey, "ntp", "ssh_authorized_key"} {
		if doc[key] != wantV {
			t.Fatalf("metadata %q=%q: %s = %#v\n%s", k, v, key, doc[key], out)
		}
	}
}

// The same for a JSON template (Ignition's shape): a value cannot close
// its string or object.
func TestJSONKeysCannotBeInjected(t *testing.T) {
	files := fstest.MapFS{
		"fs.sh":      {Data: []byte("#!/bin/sh\n")},
		"final.yaml": {Data: []byte(`{"hostname": {{json .Machine.Hostname}}, "meta": {{json .Machine.Metadata}}, "a": {{json (index .Machine.Metadata "a")}}, "vars": {{json .Vars}}}`)},
	}
	r, err := New(files, cluster())
	if err != nil {
		t.Fatal(err)
	}
	for _, evil := range evilValues {
		m := Sample()
		m.Metadata = map[string]string{"a": evil, evil: "b"}
		c := r.Context(m, "tok", "http://x")
		c.Vars = map[string]string{evil: evil}
		out, err := r.FinalConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%q: not JSON: %v\n%s", evil, err, out)
		}
		if len(doc) != 4 || doc["a"] != normalize(t, evil) || len(doc["meta"].(map[string]any)) != 2 || len(doc["vars"].(map[string]any)) != 1 {
			t.Fatalf("%q: %#v\n%s", evil, doc, out)
		}
	}
}

// shell gives the shell back exactly the value, whatever it holds.
func TestShellQuoting(t *testing.T) {
	dir := t.TempDir()
	for _, v := range append(evilValues, "it's", "", "'", `\'`, "a b\tc") {
		v = strings.ToValidUTF8(v, "?")
		q, err := shell(v)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("sh", "-c", "cd "+dir+" && printf %s "+q).Output()
		if err != nil || string(out) != v {
			t.Errorf("shell(%q) = %s: sh prints %q (%v)", v, q, out, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("a quoted value ran a command: %v", entries)
	}
	// Lists are words, numbers and maps one word each.
	for v, want := range map[string]any{
		`3|a b|x'y`: []any{3, "a b", "x'y"},
		`1.5`:       1.5,
		`{"k":"v"}`: map[string]string{"k": "v"},
		``:          nil,
	} {
		q, err := shell(want)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("sh", "-c", `for w in `+q+`; do printf '%s|' "$w"; done`).Output()
		if err != nil || strings.TrimSuffix(string(out), "|") != v {
			t.Errorf("shell(%#v) = %s: sh sees %q (%v)", want, q, out, err)
		}
	}
	if _, err := shell("nul\x00"); err == nil {
		t.Error("a NUL byte was quoted")
	}
	if q, _ := shellquote("it's"); q != `'it'\''s'` {
		t.Errorf("shellquote = %s", q)
	}
}

// The shipped first stage keeps hostile template vars in their variables:
// sourcing its assignments runs nothing.
func TestFirstStageVarsCannotRunCommands(t *testing.T) {
	cl := cluster()
	for _, evil := range evilValues {
		evil = strings.ToValidUTF8(evil, "?")
		cl.TemplateVars = map[string]string{"config_partition": evil, "mayu_urls": evil}
		r := shipped(t, cl)
		m := Sample()
		m.Serial, m.Arch, m.FailReason = evil, evil, evil
		fs, err := r.FirstStage(r.Context(m, "tok", "http://10.0.3.250:4081"))
		if err != nil {
			t.Fatal(err)
		}
		// The assignments, up to the first function.
		head, _, _ := strings.Cut(string(fs), "\nlog() {")
		dir := t.TempDir()
		script := filepath.Join(dir, "head.sh")
		os.WriteFile(script, []byte(head+"\nprintf '%s\\n%s' \"$CONFIG_PART\" \"$MAYU_URLS\"\n"), 0o600)
		cmd := exec.Command("sh", script)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil || string(out) != evil+"\n"+evil {
			t.Errorf("var %q: sh reads %q (%v)", evil, out, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("var %q ran a command: %v", evil, entries)
		}
	}
}

// shipped is a Renderer of the shipped templates.
func shipped(t testing.TB, cl config.Cluster) *Renderer {
	t.Helper()
	files := fstest.MapFS{}
	for name, key := range map[string]string{"first-stage.sh": "fs.sh", "final-config.yaml": "final.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		files[key] = &fstest.MapFile{Data: data}
	}
	r, err := New(files, cl)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
