package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// Global flags work wherever they stand on the line.
func TestFlagsAnywhere(t *testing.T) {
	e := start(t)
	e.ok("add", "node-1")
	for _, args := range [][]string{
		{"--server", e.url, "--token-file", e.tokenFile, "list"},
		{"list", "--server", e.url, "--token-file", e.tokenFile},
		{"list", "--server=" + e.url, "-o", "json", "--token-file=" + e.tokenFile},
		{"--server", e.url, "status", "node-1", "--token-file", e.tokenFile},
		{"status", "--token-file", e.tokenFile, "node-1", "--server", e.url, "-o", "wide"},
		{"-o", "yaml", "status", "--server", e.url, "--token-file", e.tokenFile, "--timeout", "5s", "node-1"},
	} {
		if code, out, errOut := runArgs(args...); code != 0 || !strings.Contains(out, "node-1") {
			t.Errorf("mayuctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// Every command that shows or changes a machine prints json, yaml and wide.
func TestOutputFormats(t *testing.T) {
	e := start(t)
	e.ok("add", "node-0")
	for _, tc := range []struct {
		args  []string
		check func(t *testing.T, format, out string)
	}{
		{[]string{"list"}, func(t *testing.T, format, out string) {
			var l api.MachineList
			decodeAs(t, format, out, &l)
			if format != "wide" && (len(l.Machines) != 1 || l.Machines[0].ID != "node-0" || l.Corrupt == nil) {
				t.Errorf("%+v", l)
			}
			if format == "wide" && (!strings.Contains(out, "SERIAL") || !strings.Contains(out, "GENERATION")) {
				t.Errorf("no wide columns:\n%s", out)
			}
		}},
		{[]string{"status", "node-0"}, func(t *testing.T, format, out string) {
			var m machine.Machine
			decodeAs(t, format, out, &m)
			if format != "wide" && (m.ID != "node-0" || m.InternalAddr != "10.0.1.10" || len(m.History) != 1) {
				t.Errorf("%+v", m)
			}
			if format == "wide" && !strings.Contains(out, "History:") {
				t.Errorf("wide status:\n%s", out)
			}
		}},
		{[]string{"add", "node-1", "--mac", "52:54:00:00:00:11"}, func(t *testing.T, format, out string) {
			var m machine.Machine
			decodeAs(t, format, out, &m)
			if format != "wide" && (m.ID != "node-1" || len(m.MACs) != 1 || m.MACs[0] != "52:54:00:00:00:11") {
				t.Errorf("%+v", m)
			}
			if format == "wide" && (!strings.Contains(out, "added node-1") || !strings.Contains(out, "machine-id ")) {
				t.Errorf("wide add: %s", out)
			}
		}},
		{[]string{"reinstall", "node-1"}, func(t *testing.T, format, out string) {
			var m machine.Machine
			decodeAs(t, format, out, &m)
			if format != "wide" && (m.ID != "node-1" || m.State != machine.Configured) {
				t.Errorf("%+v", m)
			}
			if format == "wide" && (!strings.Contains(out, "node-1 is configured") || !strings.Contains(out, "52:54:00:00:00:11")) {
				t.Errorf("wide reinstall: %s", out)
			}
		}},
		{[]string{"delete", "node-1"}, func(t *testing.T, format, out string) {
			var d api.Deleted
			decodeAs(t, format, out, &d)
			if format != "wide" && d.ID != "node-1" {
				t.Errorf("%+v", d)
			}
			if format == "wide" && !strings.Contains(out, "deleted node-1") {
				t.Errorf("wide delete: %s", out)
			}
		}},
	} {
		for _, format := range []string{"json", "yaml", "wide"} {
			t.Run(tc.args[0]+"/"+format, func(t *testing.T) {
				if tc.args[0] == "delete" {
					e.mayuctl("add", "node-1", "--mac", "52:54:00:00:00:11") // the first is there already
				}
				tc.check(t, format, e.ok(append(tc.args, "-o", format)...))
				if tc.args[0] == "add" {
					e.ok("delete", "node-1")
				}
			})
		}
		if tc.args[0] == "add" {
			e.ok("add", "node-1", "--mac", "52:54:00:00:00:11")
		}
	}
}

// decodeAs decodes out as format (json or yaml) into v; wide is text.
func decodeAs(t *testing.T, format, out string, v any) {
	t.Helper()
	var err error
	switch format {
	case "json":
		err = json.Unmarshal([]byte(out), v)
	case "yaml":
		// The YAML names fields as the JSON does: read it back as JSON.
		var doc any
		if err = yaml.Unmarshal([]byte(out), &doc); err == nil {
			var data []byte
			if data, err = json.Marshal(doc); err == nil {
				err = json.Unmarshal(data, v)
			}
		}
	}
	if err != nil {
		t.Fatalf("-o %s: %v\n%s", format, err, out)
	}
}

func TestListFilters(t *testing.T) {
	e := start(t)
	e.ok("add", "node-1") // profile core, the only slot
	e.ok("add", "node-2") // profile default
	e.ok("add", "node-3")
	if _, err := e.reg.Update(context.Background(), "node-3", func(m *machine.Machine) error {
		return m.StartInstall("replica-b", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"list"}, []string{"node-1", "node-2", "node-3"}},
		{[]string{"list", "--state", "configured"}, []string{"node-1", "node-2"}},
		{[]string{"list", "--state", "installing"}, []string{"node-3"}},
		{[]string{"list", "--state", "running"}, nil},
		{[]string{"list", "--profile", "core"}, []string{"node-1"}},
		{[]string{"list", "--profile", "default", "--state", "configured"}, []string{"node-2"}},
		{[]string{"list", "--profile", "nope"}, nil},
	} {
		var l api.MachineList
		if err := json.Unmarshal([]byte(e.ok(append(tc.args, "-o", "json")...)), &l); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range l.Machines {
			got = append(got, m.ID)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%v: got %v, want %v", tc.args, got, tc.want)
		}
		// The table agrees.
		out := e.ok(tc.args...)
		if n := len(strings.Split(strings.TrimSpace(out), "\n")) - 1; n != len(tc.want) {
			t.Errorf("%v: table has %d rows, want %d:\n%s", tc.args, n, len(tc.want), out)
		}
	}
	code, _, errOut := e.mayuctl("list", "--state", "bogus")
	if code != 2 || !strings.Contains(errOut, `unknown state "bogus"`) || !strings.Contains(errOut, "configured, installing, installed, running, failed") {
		t.Errorf("--state bogus: exit %d, %s", code, errOut)
	}
}

func TestAddFromFile(t *testing.T) {
	e := start(t)
	e.ok("add", "taken")
	file := filepath.Join(t.TempDir(), "machines.yaml")
	if err := os.WriteFile(file, []byte(`# three machines; the second is already registered
- id: m-1
  macs: [52:54:00:00:01:01, 52:54:00:00:01:02]
- id: taken
- id: m-3
  macs:
    - 52-54-00-00-01-03
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.mayuctl("add", "-f", file)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 3 ||
		!strings.HasPrefix(lines[0], "added m-1: address 10.0.1.11") || !strings.Contains(lines[0], "52:54:00:00:01:02") ||
		!strings.HasPrefix(lines[1], "failed taken: machine taken is already registered") ||
		!strings.HasPrefix(lines[2], "added m-3: address 10.0.1.12") ||
		!strings.Contains(errOut, "1 of 3 machines could not be added") {
		t.Fatalf("add -f: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if _, err := e.reg.Get(context.Background(), "m-3"); err != nil {
		t.Errorf("m-3 was not added past the failure: %v", err)
	}

	// JSON on stdin, results as JSON.
	code, out, errOut = e.mayuctlIn(`[{"id": "m-4", "macs": ["52:54:00:00:01:04"]}, {"id": "m-5", "macs": ["not-a-mac"]}]`,
		"add", "-f", "-", "-o", "json")
	var results []addResult
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 1 || len(results) != 2 ||
		results[0].ID != "m-4" || results[0].Machine == nil || results[0].Error != "" ||
		results[1].ID != "m-5" || results[1].Machine != nil || !strings.Contains(results[1].Error, "MAC") {
		t.Fatalf("add -f - -o json: exit %d %v\nstdout: %s\nstderr: %s", code, err, out, errOut)
	}
	// All added: exit 0.
	if code, out, errOut := e.mayuctlIn("- id: m-6\n", "add", "-f", "-"); code != 0 || !strings.HasPrefix(out, "added m-6") {
		t.Errorf("add -f -: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	// A malformed file adds nothing: a usage error.
	for _, tc := range []struct{ stdin, want string }{
		{"", "lists no machines"},
		{"- id: x\n  mac: [52:54:00:00:00:01]\n", "field mac not found"},
		{"- macs: [52:54:00:00:00:01]\n", "machine 1 of stdin has no id"},
		{"{id: x}", "not a YAML or JSON list"},
	} {
		code, out, errOut := e.mayuctlIn(tc.stdin, "add", "-f", "-")
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("add -f - <<< %q: exit %d\nstdout: %s\nstderr: %s", tc.stdin, code, out, errOut)
		}
	}
	for _, args := range [][]string{{"add", "-f", file, "x"}, {"add", "-f", file, "--mac", "52:54:00:00:00:01"}, {"add"}} {
		if code, _, errOut := e.mayuctl(args...); code != 2 {
			t.Errorf("%v: exit %d, %s", args, code, errOut)
		}
	}
	if code, _, errOut := e.mayuctl("add", "-f", filepath.Join(t.TempDir(), "absent.yaml")); code != 2 || !strings.Contains(errOut, "no such file") {
		t.Errorf("absent file: exit %d, %s", code, errOut)
	}
}

func TestExitCodes(t *testing.T) {
	e := start(t)
	e.ok("add", "node-1")
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"success", []string{"list"}, 0},
		{"conflict", []string{"add", "node-1"}, 1},
		{"bad id", []string{"status", "A B"}, 1},
		{"unreachable", []string{"list", "--server", deadURL}, 1},
		{"unreachable machine", []string{"status", "node-1", "--server", deadURL}, 1},
		{"unknown command", []string{"frobnicate"}, 2},
		{"unknown flag", []string{"list", "--frob"}, 2},
		{"missing flag value", []string{"list", "--state"}, 2},
		{"extra argument", []string{"list", "node-1"}, 2},
		{"bad format", []string{"status", "node-1", "-o", "xml"}, 2},
		{"bad timeout", []string{"list", "--timeout", "soon"}, 2},
		{"help of unknown", []string{"help", "frobnicate"}, 2},
		{"not found: status", []string{"status", "ghost"}, 3},
		{"not found: reinstall", []string{"reinstall", "ghost"}, 3},
		{"not found: set-metadata", []string{"set-metadata", "ghost", "k=v"}, 3},
		{"not found: delete", []string{"delete", "ghost"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := e.mayuctl(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if code != 0 && !strings.HasPrefix(errOut, "mayuctl: ") {
				t.Errorf("stderr does not say what failed: %q", errOut)
			}
		})
	}
}

// Whatever a machine sent is printed escaped in table, text and wide
// output, and stays exact in json. mayu stores such text escaped since
// issue 11; the records here hold it raw, as an older mayu or an etcdctl
// put may have left it, and the admin API serves it as it is.
func TestControlCharactersEscaped(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	p := etcdtest.Prefix(t)
	// ESC (SGR and a window title), BEL and the one-rune C1 CSI.
	const evil = "sn\x1b[31mred\x1b]0;pwned\x07\u009b2J"
	const shown = `"sn\x1b[31mred\x1b]0;pwned\a\u009b2J"`
	raw := func(out string) bool { return strings.ContainsAny(out, "\x1b\x07\u009b") }
	m, _, err := e.reg.Register(ctx, registry.Registration{ID: "evil", MACs: []string{"52:54:00:00:00:01"}})
	if err != nil {
		t.Fatal(err)
	}
	m.Serial, m.UUID, m.Arch = evil, evil, evil
	m.Metadata[evil] = evil
	if err := m.StartInstall("replica-b", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.MarkFailed("x", "replica-b", time.Now()); err != nil {
		t.Fatal(err)
	}
	m.FailReason, m.History[len(m.History)-1].Reason = evil, evil
	putRecord := func(m *machine.Machine) {
		t.Helper()
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.etc.Put(ctx, p+"machines/"+m.ID, string(data)); err != nil {
			t.Fatal(err)
		}
	}
	putRecord(m)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	if _, err := e.etc.Put(ctx, p+"leases/10.0.1.99", `{"ip":"10.0.1.99","mac":"52:54:00:00:00:01","expiry":"`+future+`","hostname":"sn\u001b[31mred\u001b]0;pwned\u0007\u009b2J","leader":"r1"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.etc.Put(ctx, p+"machines/bad\x1b[2J", `{`); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"list"}, {"list", "-o", "wide"}, {"status", "evil"}, {"status", "evil", "-o", "wide"},
		{"leases"}, {"leases", "-o", "wide"}, {"list", "-o", "yaml"}, {"status", "evil", "-o", "yaml"},
		{"leases", "-o", "yaml"}, {"list", "-o", "json"}, {"status", "evil", "-o", "json"}, {"leases", "-o", "json"},
		{"set-metadata", "evil", "k=v"}, {"reinstall", "evil"},
	} {
		code, out, errOut := e.mayuctl(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		if raw(out + errOut) {
			t.Errorf("%v prints a raw control character:\n%q\n%q", args, out, errOut)
		}
		format := args[len(args)-1]
		if args[0] == "list" && format != "yaml" && format != "json" && !strings.Contains(errOut, `\x1b[2J`) {
			t.Errorf("%v: corrupt record key not shown escaped: %q", args, errOut)
		}
		switch format {
		case "yaml":
			if !strings.Contains(out, `"sn\e[31mred\e]0;pwned\a`) {
				t.Errorf("%v: not escaped as YAML does:\n%s", args, out)
			}
			var v any
			if err := yaml.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(fmt.Sprint(v), evil) {
				t.Errorf("%v: YAML does not read back to the value: %v", args, err)
			}
			continue
		case "json":
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(fmt.Sprint(v), evil) {
				t.Errorf("%v: JSON does not read back to the value: %v\n%s", args, err, out)
			}
			continue
		}
		want := 1 // the hostname of the lease
		switch {
		case args[0] == "status":
			want = 6 // serial, UUID, arch, fail reason, metadata key and value; history reason below
		case args[0] == "list" && len(args) > 1:
			want = 4 // serial, UUID, arch, fail reason
		case args[0] == "list", args[0] == "reinstall":
			want = 0
		case args[0] == "set-metadata":
			want = 2 // its metadata key and value
		}
		if n := strings.Count(out, shown); n < want {
			t.Errorf("%v shows %s %d times, want %d:\n%s", args, shown, n, want, out)
		}
	}
	var got machine.Machine
	if err := json.Unmarshal([]byte(e.ok("status", "evil", "-o", "json")), &got); err != nil || got.Serial != evil {
		t.Errorf("json changed the serial: %q %v", got.Serial, err)
	}

	// watch, text and wide: a change to the record with hostile text.
	for i, format := range []string{"table", "wide", "json"} {
		wait := e.watch("--timeout", "5s", "-o", format)
		// Only a change of state is an event of the watch.
		m.State, m.Since = []machine.State{machine.Installing, machine.Failed}[i%2], time.Now()
		m.History = append(m.History, machine.Event{State: m.State, At: time.Now(), Replica: evil, Reason: evil})
		m.MACs = append(m.MACs, evil)
		putRecord(m)
		_, out, errOut := wait()
		if raw(out+errOut) || !strings.Contains(out, "evil") {
			t.Errorf("watch -o %s prints a raw control character or nothing:\n%q\n%q", format, out, errOut)
		}
		if format != "json" && !strings.Contains(out, shown) {
			t.Errorf("watch -o %s does not show the reason escaped:\n%s", format, out)
		}
	}
}

// The net under clean: whatever reaches stdout or stderr, a terminal
// control leaves escaped, also one split across two writes.
func TestTerminalGuard(t *testing.T) {
	var b strings.Builder
	w := &terminal{w: &b}
	for _, p := range []string{"ok\ttab\n", "esc\x1b[31m del\x7f c1 \xc2", "\x9b split é\xc3", "\xa9 bad\xff", "\xe2\x80"} {
		w.Write([]byte(p))
	}
	w.Flush()
	if got, want := b.String(), `ok`+"\t"+`tab`+"\n"+`esc\u001b[31m del\u007f c1 \u009b split éé bad\xff\xe2\x80`; got != want {
		t.Errorf("guarded:\n%q\nwant\n%q", got, want)
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"plain":             "plain",
		"with space/é-ü":    "with space/é-ü",
		"a\x1b[31mb":        `"a\x1b[31mb"`,
		"tab\there":         `"tab\there"`,
		"line\n":            `"line\n"`,
		"bad\xffutf8":       `"bad\xffutf8"`,
		"rtl\u202eoverride": `"rtl\u202eoverride"`,
		"nul\x00":           `"nul\x00"`,
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCompletion(t *testing.T) {
	e := start(t)
	e.ok("add", "node-1")
	e.ok("add", "node-2")
	e.ok("add", "other")
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runArgs("completion", shell)
		if code != 0 || !strings.Contains(out, "mayuctl") || len(out) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes, %s", shell, code, len(out), errOut)
		}
	}
	// What the shell scripts call: machine ids for the commands taking one.
	for _, cmd := range []string{"status", "reinstall", "delete", "set-metadata"} {
		code, out, errOut := e.mayuctl("__complete", cmd, "node")
		if code != 0 || !strings.Contains(out, "node-1\tconfigured") || !strings.Contains(out, "node-2") || strings.Contains(out, "other") {
			t.Errorf("complete %s: exit %d\nstdout: %s\nstderr: %s", cmd, code, out, errOut)
		}
	}
	// Only the first argument is a machine.
	if _, out, _ := e.mayuctl("__complete", "status", "node-1", ""); strings.Contains(out, "node-2") {
		t.Errorf("second argument completed: %s", out)
	}
	if _, out, _ := e.mayuctl("__complete", "list", "--state", ""); !strings.Contains(out, "installing") {
		t.Errorf("--state: %s", out)
	}
	// Unreachable: nothing, quietly.
	code, out, errOut := runArgs("__complete", "--server", "http://127.0.0.1:1", "--token-file", e.tokenFile, "status", "")
	if code != 0 || strings.Contains(out, "node-1") || strings.Contains(errOut, "mayuctl:") {
		t.Errorf("unreachable: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}, {"version", "-o", "wide"}} {
		if code, out, errOut := runArgs(args...); code != 0 || out != "mayuctl "+version+"\n" {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errOut)
		}
	}
	if code, out, _ := runArgs("version", "-o", "json"); code != 0 || strings.TrimSpace(out) != "{\n  \"version\": \""+version+"\"\n}" {
		t.Errorf("version -o json: exit %d, %q", code, out)
	}
	if code, _, _ := runArgs("version", "extra"); code != 2 {
		t.Errorf("version extra: exit %d", code)
	}
}

// Every command has an example in its help.
func TestHelpHasExamples(t *testing.T) {
	root := (&cli{}).newRoot()
	for _, cmd := range root.Commands() {
		if cmd.Name() == "completion" {
			continue // cobra's own
		}
		if cmd.Example == "" {
			t.Errorf("%s has no Example", cmd.Name())
		}
	}
}

// mayuctl links the admin API's wire types, never the server: no etcd,
// gRPC, DHCP or Prometheus.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not in PATH")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{"go.etcd.io/", "google.golang.org/grpc", "github.com/insomniacslk/", "github.com/prometheus/"}
	for _, p := range []string{"dhcp", "admin", "registry", "etcd", "election", "replica", "server"} {
		forbidden = append(forbidden, "github.com/mayu-boot/mayu/pkg/"+p)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("mayuctl depends on %s", dep)
			}
		}
	}
	if !strings.Contains(string(out), "github.com/mayu-boot/mayu/pkg/api\n") {
		t.Errorf("mayuctl does not use pkg/api:\n%s", out)
	}
}

// watch follows changes and, with --timeout, ends by itself with success.
func TestWatchWithTimeout(t *testing.T) {
	e := start(t)
	wait := e.watch("--timeout", "5s", "-o", "wide")
	e.ok("add", "node-1", "--mac", "52:54:00:00:00:01")
	code, out, errOut := wait()
	if code != 0 || !strings.Contains(out, "node-1  registered, configured  by replica-a: added by an operator") ||
		!strings.Contains(out, "(MACs 52:54:00:00:00:01)") {
		t.Errorf("watch: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
