package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/coreos/ignition/v2/config/v3_3/types"
	"github.com/vincent-petithory/dataurl"
	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/internal/ignitiontest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/ignition"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// exampleCluster is etc/mayu.yaml's cluster with the final config
// template and format given.
func exampleCluster(t testing.TB, finalConfig, format string) config.Cluster {
	t.Helper()
	cfg, err := config.Load("../../etc/mayu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	c.Templates.FinalConfig = finalConfig
	c.Templates.FinalConfigFormat = format
	return c
}

func shippedRenderer(t testing.TB, c config.Cluster) *Renderer {
	t.Helper()
	r, err := New(os.DirFS("../../etc"), c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// hostileMetadata is metadata an operator (or a profile's tags) may set
// that a careless template would turn into extra keys, lines or units.
var hostileMetadata = []map[string]string{
	{},
	{"quote": `say "hi" 'there'`, "yaml": "a: b\n- c\n{d: e}"},
	{"newline": "x\nrule-admin=true", "cr": "x\r\ny=z"},
	{"eq": "a=b=c", "k=ey": "v", `back\slash`: `\n`},
	{"unicode": "héllo wörld ✓ 🚀", "bidi": "a\u202eb", "ctl": "\x00\x1b[2J\x7f"},
	{"json": `{"ignition":{"version":"3.4.0"}}`, "hash": "# not a comment", "percent": "%41%0a"},
	{"bad-utf8": "\xff\xfe", "empty": ""},
}

// fleet is a set of machines of every profile of etc/mayu.yaml (and the
// default one), with hostile metadata and one to three MACs.
func fleet(c config.Cluster) []*machine.Machine {
	profiles := []config.Profile{{Name: "default"}}
	profiles = append(profiles, c.Profiles...)
	var out []*machine.Machine
	for i, meta := range hostileMetadata {
		for j, p := range profiles {
			m := Sample()
			m.ID = fmt.Sprintf("m%d-%d", i, j)
			m.MachineID = fmt.Sprintf("%032x", i*100+j+1)
			m.Hostname = m.MachineID[:16]
			m.Profile = p.Name
			m.InternalAddr = fmt.Sprintf("10.0.3.%d", 10+i*len(profiles)+j)
			m.MACs = nil
			for k := 0; k <= (i+j)%3; k++ {
				m.MACs = append(m.MACs, fmt.Sprintf("52:54:00:%02x:%02x:%02x", i, j, k))
			}
			m.Metadata = map[string]string{}
			for k, v := range p.Tags {
				m.Metadata[k] = v
			}
			for k, v := range meta {
				m.Metadata[k] = v
			}
			out = append(out, m)
		}
	}
	return out
}

// networks: etc/mayu.yaml's, one without DNS, one without a gateway.
func networks(base config.Cluster) map[string]config.Cluster {
	noDNS, noGW := base, base
	noDNS.Static.DNS = nil
	noGW.Static.Gateway = netip.Addr{}
	return map[string]config.Cluster{"example": base, "no dns": noDNS, "no gateway": noGW}
}

// The shipped Ignition example, rendered for many machines and networks:
// each config validates with the library and with Debian's
// ignition-validate, and says what the README promises, whatever the
// metadata holds.
func TestShippedIgnitionForManyMachines(t *testing.T) {
	base := exampleCluster(t, "templates/final-config.ign.yaml", config.FormatIgnition)
	base.TemplateVars = map[string]string{"ssh_authorized_key": "ssh-ed25519 AAAAC3Nza op@example",
		"mayu_urls": "http://10.0.3.2:4081 http://10.0.3.3:4081/"}
	for name, c := range networks(base) {
		r := shippedRenderer(t, c)
		for _, m := range fleet(c) {
			t.Run(name+"/"+m.ID, func(t *testing.T) {
				rc := r.Context(m, "tok", "http://10.0.3.250:4081")
				out, err := r.FinalConfig(rc)
				if err != nil {
					t.Fatal(err)
				}
				checkShippedIgnition(t, out, m, rc)
				ignitiontest.Validate(t, out)
			})
		}
	}
}

// checkShippedIgnition checks what the example's config makes Ignition
// write for m.
func checkShippedIgnition(t testing.TB, out []byte, m *machine.Machine, rc Context) {
	t.Helper()
	if again, err := ignition.Validate(out); err != nil || string(again.JSON) != string(out) {
		t.Fatalf("served config does not validate to itself: %v", err)
	}
	var cfg types.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	modes := map[string]int{}
	for _, f := range cfg.Storage.Files {
		d, err := dataurl.DecodeString(*f.Contents.Source)
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		files[f.Path] = string(d.Data)
		modes[f.Path] = *f.Mode
	}
	if got := files["/etc/hostname"]; got != m.Hostname+"\n" {
		t.Errorf("hostname file %q", got)
	}
	var network strings.Builder
	fmt.Fprintf(&network, "[Match]\nMACAddress=%s\n\n[Network]\nAddress=%s/%d\n", strings.Join(m.MACs, " "), m.InternalAddr, rc.Network.PrefixLen)
	if rc.Network.Gateway != "" {
		fmt.Fprintf(&network, "Gateway=%s\n", rc.Network.Gateway)
	}
	for _, d := range rc.Network.DNS {
		fmt.Fprintf(&network, "DNS=%s\n", d)
	}
	if got := files["/etc/systemd/network/00-mayu.network"]; got != network.String() {
		t.Errorf("network file:\n%s\nwant:\n%s", got, network.String())
	}
	if got := parseKeyValues(t, files["/etc/mayu/metadata"]); !reflect.DeepEqual(got, validUTF8(m.Metadata)) {
		t.Errorf("metadata file %q reads back as %q, want %q", files["/etc/mayu/metadata"], got, m.Metadata)
	}
	want, err := replicas(rc.URLs.BootComplete, rc.Vars["mayu_urls"])
	if err != nil {
		t.Fatal(err)
	}
	if got := files["/etc/mayu/boot-complete"]; got != strings.Join(want, "\n")+"\n" || !strings.Contains(got, "token=tok") {
		t.Errorf("boot-complete file %q", got)
	}
	if modes["/etc/mayu/boot-complete"] != 0o600 {
		t.Errorf("boot-complete file mode %o", modes["/etc/mayu/boot-complete"])
	}
	if len(cfg.Passwd.Users) != 1 || cfg.Passwd.Users[0].Name != "core" {
		t.Fatalf("users %+v", cfg.Passwd.Users)
	}
	if key := rc.Vars["ssh_authorized_key"]; key != "" {
		if k := cfg.Passwd.Users[0].SSHAuthorizedKeys; len(k) != 1 || string(k[0]) != string([]rune(key)) {
			t.Errorf("ssh keys %q", k)
		}
	}
	if len(cfg.Systemd.Units) != 1 {
		t.Fatalf("units %+v", cfg.Systemd.Units)
	}
	u := cfg.Systemd.Units[0]
	if u.Name != "mayu-boot-complete.service" || u.Enabled == nil || !*u.Enabled ||
		!strings.Contains(*u.Contents, "Type=oneshot") || !strings.Contains(*u.Contents, `curl -fsS -o /dev/null -X POST "$$url"`) {
		t.Errorf("unit %+v", u)
	}
}

// validUTF8 is m as keyvalues writes it: each invalid byte as U+FFFD.
func validUTF8(m map[string]string) map[string]string {
	fix := func(s string) string { return string([]rune(s)) }
	out := map[string]string{}
	for k, v := range m {
		out[fix(k)] = fix(v)
	}
	return out
}

// parseKeyValues reads what keyvalues wrote, as a reader of
// /etc/mayu/metadata would: one entry a line, the key up to the first
// "=" not after a backslash.
func parseKeyValues(t testing.TB, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if s == "" {
		return out
	}
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("metadata %q does not end in a newline", s)
	}
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		var key, val strings.Builder
		cur, esc := &key, false
		for i := 0; i < len(line); i++ {
			c := line[i]
			switch {
			case esc:
				esc = false
				switch c {
				case 'n':
					cur.WriteByte('\n')
				case 'r':
					cur.WriteByte('\r')
				case 't':
					cur.WriteByte('\t')
				case 'u', 'U':
					n := 4
					if c == 'U' {
						n = 8
					}
					r, err := strconv.ParseUint(line[i+1:i+1+n], 16, 32)
					if err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
					cur.WriteRune(rune(r))
					i += n
				default:
					cur.WriteByte(c)
				}
			case c == '\\':
				esc = true
			case c == '=' && cur == &key:
				cur = &val
			default:
				cur.WriteByte(c)
			}
		}
		if cur != &val {
			t.Fatalf("line %q has no =", line)
		}
		if _, dup := out[key.String()]; dup {
			t.Fatalf("key %q twice", key.String())
		}
		out[key.String()] = val.String()
	}
	return out
}

func TestDataURLRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "a b\nc\r\n", `"quoted" 'single' \back`, "%41%", "#,;=&?+", "héllo 🚀", "\x00\xff"} {
		u, err := dataURL(s)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(u, "\"' \n\\#") {
			t.Errorf("data URL of %q holds a character a YAML or JSON value would see: %s", s, u)
		}
		d, err := dataurl.DecodeString(u)
		if err != nil || string(d.Data) != s {
			t.Errorf("%q -> %s -> %q, %v", s, u, d, err)
		}
	}
	if _, err := dataURL(42); err == nil {
		t.Error("dataurl of a number")
	}
}

func TestKeyValues(t *testing.T) {
	got := keyValues(map[string]string{"rule-core": "true", "b": "x\ny=z", "a=b": `c\d`, "u": "\x1b✓"})
	want := "a\\=b=c\\\\d\nb=x\\ny=z\nrule-core=true\nu=\\u001b✓\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestReplicas(t *testing.T) {
	u := "http://10.0.3.250:4081/machines/m1/boot-complete?token=t"
	got, err := replicas(u, " http://a:1/\thttps://b:2 ")
	if err != nil || !reflect.DeepEqual(got, []string{"http://a:1/machines/m1/boot-complete?token=t", "https://b:2/machines/m1/boot-complete?token=t"}) {
		t.Fatalf("%q %v", got, err)
	}
	if got, _ := replicas(u, ""); !reflect.DeepEqual(got, []string{u}) {
		t.Fatalf("no bases: %q", got)
	}
	for _, bad := range []string{"10.0.3.2:4081", "http://a/?x=1", "ftp://a", "http://"} {
		if _, err := replicas(u, bad); err == nil {
			t.Errorf("%q accepted as a base URL", bad)
		}
	}
}

// The cloud-init example (a text final config, item 6 of issue 13):
// rendered for many machines, it is YAML starting with #cloud-config, and
// the metadata and hostname come back as they went in.
func TestShippedCloudInitForManyMachines(t *testing.T) {
	base := exampleCluster(t, "examples/cloud-init/user-data.yaml", config.FormatText)
	base.TemplateVars = map[string]string{"ssh_authorized_key": "ssh-ed25519 AAAA op@example", "mayu_urls": "http://10.0.3.2:4081 http://10.0.3.3:4081"}
	for name, c := range networks(base) {
		r := shippedRenderer(t, c)
		for _, m := range fleet(c) {
			rc := r.Context(m, "tok", "http://10.0.3.250:4081")
			out, err := r.FinalConfig(rc)
			if err != nil {
				t.Fatalf("%s/%s: %v", name, m.ID, err)
			}
			if !strings.HasPrefix(string(out), "#cloud-config\n") {
				t.Fatalf("%s/%s: does not start with #cloud-config:\n%s", name, m.ID, out)
			}
			var doc struct {
				Hostname          string   `yaml:"hostname"`
				SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
				WriteFiles        []struct {
					Path, Content, Permissions string
				} `yaml:"write_files"`
				Runcmd []any `yaml:"runcmd"`
			}
			if err := yaml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("%s/%s: not YAML: %v\n%s", name, m.ID, err, out)
			}
			if doc.Hostname != m.Hostname || len(doc.SSHAuthorizedKeys) != 1 || len(doc.Runcmd) == 0 {
				t.Fatalf("%s/%s: %+v", name, m.ID, doc)
			}
			files := map[string]string{}
			for _, f := range doc.WriteFiles {
				files[f.Path] = f.Content
			}
			if got := parseKeyValues(t, files["/etc/mayu/metadata"]); !reflect.DeepEqual(got, validUTF8(m.Metadata)) {
				t.Fatalf("%s/%s: metadata %q", name, m.ID, files["/etc/mayu/metadata"])
			}
			if !strings.Contains(files["/etc/mayu/boot-complete"], "http://10.0.3.3:4081/machines/"+m.ID+"/boot-complete?token=tok") {
				t.Fatalf("%s/%s: boot-complete %q", name, m.ID, files["/etc/mayu/boot-complete"])
			}
			// The installed OS has its static address from the networkd
			// file (DHCP ignores it) and a unit that reports every boot.
			if nw := files["/etc/systemd/network/00-mayu.network"]; !strings.Contains(nw, "\nAddress="+rc.Network.Address+"/") || !strings.Contains(nw, "MACAddress="+m.MACs[0]) {
				t.Fatalf("%s/%s: networkd file %q", name, m.ID, nw)
			}
			if !strings.Contains(files["/etc/systemd/system/mayu-boot-complete.service"], "WantedBy=multi-user.target") {
				t.Fatalf("%s/%s: no boot-complete unit", name, m.ID)
			}
		}
	}
}

// FuzzShippedIgnition feeds metadata and template variables through the
// shipped Ignition example: the result either validates (with the
// library, to itself, and says what went in) or is refused with a
// render.Error; it is never an invalid config.
func FuzzShippedIgnition(f *testing.F) {
	f.Add("rule-core", "true", "ssh-ed25519 AAAA op", "http://10.0.3.2:4081")
	f.Add("k=ey", "a\nb=c", "x\"y", "http://a:1 http://b:2/")
	f.Add("", "\x00\xff", "", "not a url")
	f.Add("u", "🚀\u202e", "ssh-rsa AAAA\nbogus: 1", "")
	base := exampleCluster(f, "templates/final-config.ign.yaml", config.FormatIgnition)
	r := shippedRenderer(f, base)
	f.Fuzz(func(t *testing.T, key, value, sshKey, mayuURLs string) {
		m := Sample()
		m.Metadata = map[string]string{key: value, "rule-core": "true"}
		rc := r.Context(m, "tok", "http://10.0.3.250:4081")
		rc.Vars = map[string]string{"ssh_authorized_key": sshKey, "mayu_urls": mayuURLs}
		out, err := r.FinalConfig(rc)
		if err != nil {
			var re *Error
			if !errors.As(err, &re) || re.Key != "cluster.templates.final_config" || out != nil {
				t.Fatalf("refused without a render.Error naming the template: %v", err)
			}
			return
		}
		checkShippedIgnition(t, out, m, rc)
	})
}

// A template declared Ignition that does not validate for the sample
// machine stops mayu at start and fails `mayu -check`, naming the
// template's key, the path inside the config and Ignition's message; its
// warnings are kept for -check to print.
func TestIgnitionTemplateCheckedAtStart(t *testing.T) {
	c := cluster()
	c.Templates.FinalConfigFormat = config.FormatIgnition
	for name, tc := range map[string]struct {
		final string
		want  string
	}{
		"unknown key":   {"ignition: {version: \"3.3.0\"}\nstorage: {filez: []}\n", "cluster.templates.final_config: invalid Ignition 3.3.0 config: $.storage.filez: unknown key filez"},
		"relative path": {"ignition: {version: \"3.3.0\"}\nstorage: {files: [{path: {{yaml .Machine.Hostname}}}]}\n", "cluster.templates.final_config: invalid Ignition 3.3.0 config: $.storage.files.0.path: path not absolute"},
		"version":       {"ignition: {version: \"3.4.0\"}\n", `$.ignition.version: is "3.4.0"`},
		"not ignition":  {"hostname: {{yaml .Machine.Hostname}}\n", "$.ignition.version: missing"},
	} {
		t.Run(name, func(t *testing.T) {
			files := fstest.MapFS{"fs.sh": {Data: []byte("#!/bin/sh\n")}, "final.yaml": {Data: []byte(tc.final)}}
			_, err := New(files, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A key only one profile renders is checked at start too: the sample
	// machine is rendered in every profile, with its tags as metadata.
	perProfile := c
	perProfile.Profiles = []config.Profile{{Name: "core", Quantity: 1, Tags: map[string]string{"rule-core": "true"}}}
	_, err := New(fstest.MapFS{"fs.sh": {Data: []byte("#!/bin/sh\n")}, "final.yaml": {Data: []byte(
		"ignition: {version: \"3.3.0\"}\n{{if eq (index .Machine.Metadata \"rule-core\") \"true\"}}storage: {files: [{path: /x, overwrit: true}]}{{end}}\n")}}, perProfile)
	if err == nil || !strings.Contains(err.Error(), `profile "core"`) || !strings.Contains(err.Error(), "$.storage.files.0.overwrit: unknown key") {
		t.Fatalf("a key misspelt only for profile core: %v", err)
	}
	// The first stage may be Ignition too (the installer's config).
	fsIgn := c
	fsIgn.Templates.FirstStageFormat = config.FormatIgnition
	fsIgn.Templates.FinalConfigFormat = config.FormatText
	_, err = New(fstest.MapFS{"fs.sh": {Data: []byte("#!/bin/sh\n")}, "final.yaml": {Data: []byte("x")}}, fsIgn)
	if err == nil || !strings.Contains(err.Error(), "cluster.templates.first_stage: invalid Ignition 3.3.0 config: $: not valid YAML or JSON") {
		t.Fatalf("a shell script as Ignition first stage: %v", err)
	}

	files := fstest.MapFS{"fs.sh": {Data: []byte("#!/bin/sh\n")}, "final.yaml": {Data: []byte(
		"ignition: {version: \"3.3.0\"}\nstorage: {files: [{path: /usr/bin/x, mode: 2541, contents: {source: {{yaml (dataurl .Machine.ID)}}}}]}\n")}}
	r, err := New(files, c)
	if err != nil {
		t.Fatal(err)
	}
	if w := r.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "cluster.templates.final_config: Ignition warning at $.storage.files.0.mode: setuid") {
		t.Fatalf("warnings %q", w)
	}
	if !r.FinalConfigIsIgnition() || r.FirstStageIsIgnition() {
		t.Fatal("formats")
	}
	// A render for a machine gives the library's JSON.
	out, err := r.FinalConfig(r.Context(Sample(), "t", "http://x"))
	if err != nil || !strings.Contains(string(out), `"source":"data:,sample-serial"`) {
		t.Fatalf("%s %v", out, err)
	}
}
