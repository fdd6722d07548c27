package ignition

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/ignitiontest"
)

const head = "ignition: {version: \"3.3.0\"}\n"

// Every way a document can be other than what Ignition 3.3 reads exactly
// as written is refused, with the path of the problem and a message that
// says what is wrong.
func TestConvertRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		src        string
		path, want string
	}{
		"unknown key at the top":     {head + "storage: {}\nstorge: {files: []}\n", "$.storge", "unknown key storge"},
		"unknown key nested":         {head + "storage:\n  files:\n    - path: /etc/motd\n      contnets: {source: 'data:,hi'}\n", "$.storage.files.0.contnets", "unknown key contnets"},
		"unknown key in ignition":    {"ignition: {version: \"3.3.0\", verison: x}\n", "$.ignition.verison", "unknown key"},
		"wrong type":                 {head + "storage: {files: /etc/motd}\n", "$.storage.files", "got string, Ignition wants a list"},
		"wrong type of a leaf":       {head + "passwd: {users: [{name: core, uid: lots}]}\n", "$.passwd.users.uid", "Ignition wants an integer"},
		"version as a number":        {"ignition: {version: 3.3}\n", "$.ignition.version", "Ignition wants a string"},
		"version 3.4.0":              {"ignition: {version: \"3.4.0\"}\n", "$.ignition.version", `is "3.4.0"; mayu renders spec 3.3.0`},
		"version 3.2.0":              {`{"ignition": {"version": "3.2.0"}}`, "$.ignition.version", `is "3.2.0"`},
		"version missing":            {"storage: {}\n", "$.ignition.version", `missing: set it to "3.3.0"`},
		"empty document":             {"", "$", "not valid YAML or JSON"},
		"not an object":              {"- a\n", "$", "Ignition wants an object"},
		"duplicate key":              {head + "storage: {}\nstorage: {}\n", "$", `key "storage" appears twice`},
		"duplicate key in JSON":      {`{"ignition": {"version": "3.3.0", "version": "3.3.0"}}`, "$.ignition", `key "version" appears twice`},
		"YAML alias":                 {head + "storage:\n  files:\n    - &f {path: /a}\n    - *f\n", "$.storage.files.1", "aliases are not allowed"},
		"merge key":                  {head + "storage: {files: [{<<: {path: /a}}]}\n", "$.storage.files.0", "keys must be plain strings"},
		"two documents":              {head + "---\n" + head, "$", "more than one YAML document"},
		"timestamp-looking value":    {head + "passwd: {users: [{name: core, gecos: 2026-11-29}]}\n", "$.passwd.users.0.gecos", "!!timestamp; quote it"},
		"binary value":               {head + "passwd: {users: [{name: !!binary aGk=}]}\n", "$.passwd.users.0.name", "!!binary"},
		"infinity":                   {head + "passwd: {users: [{name: core, uid: .inf}]}\n", "$", "not expressible in JSON"},
		"relative path":              {head + "storage: {files: [{path: etc/motd}]}\n", "$.storage.files.0.path", "path not absolute"},
		"bad data URL":               {head + "storage: {files: [{path: /a, contents: {source: 'data:x'}}]}\n", "$.storage.files.0.contents.source", "media type"},
		"unknown key beside a null":  {head + "passwd:\nstorage: {filez: [], files: ~}\n", "$.storage.filez", "unknown key filez"},
		"null in a list":             {head + "storage: {files: [null]}\n", "$.storage.files.0", "a list item is empty"},
		"null group":                 {head + "passwd: {users: [{name: core, groups: [null]}]}\n", "$.passwd.users.0.groups.0", "a list item is empty"},
		"null in a JSON list":        {`{"ignition": {"version": "3.3.0"}, "kernelArguments": {"shouldExist": [null]}}`, "$.kernelArguments.shouldExist.0", "a list item is empty"},
		"broken second document":     {head + "---\npasswd:\n\tusers: []\n", "$", "the second is not valid YAML"},
		"junk after document end":    {head + "...\n\t: [\n", "$", "not valid YAML"},
		"JSON then more":             {`{"ignition": {"version": "3.3.0"}} {"passwd": {}}`, "$", "more after the object"},
		"too big":                    {head + "#" + strings.Repeat("x", MaxSize) + "\n", "$", "more than"},
		"same path twice":            {head + "storage: {files: [{path: /a}, {path: /a}]}\n", "$.storage.files.1", "duplicate"},
		"not YAML":                   {"ignition: {version: \"3.3.0\"\n", "$", "not valid YAML or JSON"},
		"non-string key":             {head + "storage: {[1]: x}\n", "$.storage", "keys must be plain strings"},
		"unknown key deep in a unit": {head + "systemd: {units: [{name: a.service, dropins: [{name: x.conf, content: y}]}]}\n", "$.systemd.units.0.dropins.0.content", "unknown key"},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := Convert([]byte(tc.src))
			var ie *InvalidError
			if !errors.As(err, &ie) || !IsInvalid(err) {
				t.Fatalf("got %s, %v; want an *InvalidError", res.JSON, err)
			}
			for _, p := range ie.Problems {
				if strings.HasPrefix(p.Path, tc.path) && strings.Contains(p.Message, tc.want) {
					if res.JSON != nil {
						t.Fatal("JSON returned with an error")
					}
					if !strings.HasPrefix(err.Error(), "invalid Ignition 3.3.0 config") || !strings.Contains(err.Error(), p.Path+": ") {
						t.Fatalf("message %q does not name the path", err)
					}
					return
				}
			}
			t.Fatalf("problems %v; want one at %s saying %q", ie.Problems, tc.path, tc.want)
		})
	}
}

// A valid config comes out as JSON meaning what went in (the library's
// types marshalled, empty objects added where the spec has them), which
// Ignition's parser reads back to the same config, and ignition-validate
// accepts.
// JSON is read as JSON: a rune beyond 16 bits written as a surrogate
// pair (what the json template function writes for an unprintable one)
// is kept, where YAML's parser would refuse the escape.
func TestConvertJSONSurrogates(t *testing.T) {
	res, err := Convert([]byte(`{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/team", "contents": {"source": "data:,flag"}, "user": {"name": "te\udb40\udc67am"}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.JSON), "te"+string(rune(0xe0067))+"am") {
		t.Fatalf("rune lost: %s", res.JSON)
	}
}

func TestConvertRoundTrips(t *testing.T) {
	src := head + `passwd:
  users:
    - name: core
      sshAuthorizedKeys: ["ssh-ed25519 AAAA op@example"]
      groups: [sudo]
storage:
  files:
    - path: /etc/hostname
      overwrite: true
      mode: 0o644
      contents: {source: "data:,m1%0A"}
    - path: /etc/mayu/boot-complete
      mode: 384
      contents: {source: "data:;base64,aGk="}
  links:
    - {path: /etc/localtime, target: /usr/share/zoneinfo/UTC}
  directories:
    - {path: /etc/mayu, mode: 493}
systemd:
  units:
    - name: mayu-boot-complete.service
      enabled: true
      contents: "[Unit]\nDescription=x\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
kernelArguments: {shouldExist: [quiet]}
`
	res, err := Convert([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings %v", res.Warnings)
	}
	var got map[string]any
	if err := json.Unmarshal(res.JSON, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"ignition": map[string]any{"version": "3.3.0", "config": map[string]any{"replace": map[string]any{"verification": map[string]any{}}},
			"proxy": map[string]any{}, "security": map[string]any{"tls": map[string]any{}}, "timeouts": map[string]any{}},
		"passwd": map[string]any{"users": []any{map[string]any{"name": "core", "sshAuthorizedKeys": []any{"ssh-ed25519 AAAA op@example"}, "groups": []any{"sudo"}}}},
		"storage": map[string]any{
			"files": []any{
				map[string]any{"path": "/etc/hostname", "overwrite": true, "mode": 420.0, "group": map[string]any{}, "user": map[string]any{},
					"contents": map[string]any{"source": "data:,m1%0A", "verification": map[string]any{}}},
				map[string]any{"path": "/etc/mayu/boot-complete", "mode": 384.0, "group": map[string]any{}, "user": map[string]any{},
					"contents": map[string]any{"source": "data:;base64,aGk=", "verification": map[string]any{}}},
			},
			"links":       []any{map[string]any{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC", "group": map[string]any{}, "user": map[string]any{}}},
			"directories": []any{map[string]any{"path": "/etc/mayu", "mode": 493.0, "group": map[string]any{}, "user": map[string]any{}}},
		},
		"systemd": map[string]any{"units": []any{map[string]any{"name": "mayu-boot-complete.service", "enabled": true,
			"contents": "[Unit]\nDescription=x\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}}},
		"kernelArguments": map[string]any{"shouldExist": []any{"quiet"}},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		t.Fatalf("got\n%s", g)
	}
	// The same document as JSON gives the same bytes.
	asJSON, _ := json.Marshal(got)
	again, err := Convert(asJSON)
	if err != nil || string(again.JSON) != string(res.JSON) {
		t.Fatalf("JSON source: %v\n%s\n%s", err, again.JSON, res.JSON)
	}
	ignitiontest.Validate(t, res.JSON)
}

// A key with no value (a template's empty branch) means the key is
// absent, as Ignition reads it, and leaves nothing unchecked.
func TestConvertNullIsAbsent(t *testing.T) {
	res, err := Convert([]byte(head + "passwd:\nstorage: {files: ~}\n"))
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("%v %v", err, res.Warnings)
	}
	plain, _ := Convert([]byte(head))
	if string(res.JSON) != string(plain.JSON) {
		t.Fatalf("%s\n%s", res.JSON, plain.JSON)
	}
}

// Ignition's warnings that do not change what a config means are kept,
// by path, and the config passes.
func TestConvertKeepsWarnings(t *testing.T) {
	res, err := Convert([]byte(head + "storage: {files: [{path: /usr/bin/x, mode: 2541}]}\n" +
		"systemd: {units: [{name: a.service, enabled: true, contents: \"[Service]\\nExecStart=/bin/true\\n\"}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 2 || res.Warnings[0].Path != "$.storage.files.0.mode" || !strings.Contains(res.Warnings[0].Message, "setuid") ||
		res.Warnings[1].Path != "$.systemd.units.0.contents" || !strings.Contains(res.Warnings[1].Message, "no install section") {
		t.Fatalf("warnings %v", res.Warnings)
	}
	if out, ok := ignitiontest.Run(t, res.JSON); !ok {
		t.Fatalf("ignition-validate: %s", out)
	}
}

// What ignition-validate (another build of Ignition) refuses, mayu
// refuses too: the unknown key it only warns of, the wrong version, the
// relative path.
func TestRefusedAlsoByIgnitionValidate(t *testing.T) {
	for _, raw := range []string{
		`{"ignition":{"version":"3.4.0"}}`,
		`{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"rel"}]}}`,
	} {
		if out, ok := ignitiontest.Run(t, []byte(raw)); ok {
			t.Errorf("ignition-validate accepts %s: %s", raw, out)
		}
		if _, err := Validate([]byte(raw)); !IsInvalid(err) {
			t.Errorf("mayu accepts %s: %v", raw, err)
		}
	}
	unknown := `{"ignition":{"version":"3.3.0"},"bogus":1}`
	if out, _ := ignitiontest.Run(t, []byte(unknown)); !strings.Contains(out, "Unused key bogus") {
		t.Errorf("ignition-validate on an unknown key: %s", out)
	}
	if _, err := Validate([]byte(unknown)); err == nil || !strings.Contains(err.Error(), "$.bogus: unknown key bogus") {
		t.Errorf("mayu on an unknown key: %v", err)
	}
}

// FuzzConvert: Convert never panics, refuses only with an *InvalidError,
// and whatever it accepts Validate accepts again with the same bytes
// (what is served means what was validated).
func FuzzConvert(f *testing.F) {
	f.Add(head)
	f.Add(head + "storage: {files: [{path: /etc/motd, contents: {source: 'data:,hi'}, mode: 420}]}\n")
	f.Add(head + "passwd: {users: [{name: core, sshAuthorizedKeys: [\"ssh-ed25519 AAAA\"]}]}\n")
	f.Add(head + "systemd: {units: [{name: a.service, enabled: true, contents: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"}]}\n")
	f.Add(`{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","mode":2541}]}}`)
	f.Add(head + "x: &a 1\ny: *a\n")
	f.Add(head + "---\n")
	f.Fuzz(func(t *testing.T, src string) {
		res, err := Convert([]byte(src))
		if err != nil {
			if !IsInvalid(err) || res.JSON != nil {
				t.Fatalf("refused with %T %v", err, err)
			}
			return
		}
		again, err := Validate(res.JSON)
		if err != nil {
			t.Fatalf("accepted %q as %s, which does not validate: %v", src, res.JSON, err)
		}
		if string(again.JSON) != string(res.JSON) || !reflect.DeepEqual(again.Warnings, res.Warnings) {
			t.Fatalf("accepted %q as\n%s\nwhich validates as\n%s", src, res.JSON, again.JSON)
		}
	})
}
