package render

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/ignition"
)

// The Flatcar example (etc/examples/flatcar): its mayu.yaml passes
// validation as it is, and both its templates render valid Ignition for
// machines of every profile, checked by the library and by Debian's
// independent ignition-validate.

const flatcarDir = "../../etc/examples/flatcar"

// flatcarExample loads the example's mayu.yaml and its templates (the
// final config from etc/templates, where the example says to copy it).
func flatcarExample(t *testing.T) (*config.Config, fstest.MapFS) {
	t.Helper()
	path := filepath.Join(flatcarDir, "mayu.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, path)
	if err != nil {
		t.Fatalf("the Flatcar example does not validate: %v", err)
	}
	if cfg.Cluster.Templates.FirstStageFormat != config.FormatIgnition || cfg.Cluster.Templates.FinalConfigFormat != config.FormatIgnition {
		t.Fatalf("the example's templates are not declared Ignition: %+v", cfg.Cluster.Templates)
	}
	for role, want := range map[string]string{"kernel": "artifact:flatcar-pxe-kernel", "initrd": "artifact:flatcar-pxe-initrd", "image": "artifact:flatcar-image"} {
		if got := cfg.Cluster.Source("", role); got != want {
			t.Errorf("cluster.install.%s is %q, want %q", role, got, want)
		}
	}
	if !strings.Contains(cfg.Cluster.Install.KernelArgs, "flatcar.first_boot=1") {
		t.Errorf("kernel_args lack flatcar.first_boot=1: %q", cfg.Cluster.Install.KernelArgs)
	}
	files := fstest.MapFS{}
	installer, err := os.ReadFile(filepath.Join(flatcarDir, "templates", "installer.ign.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files[cfg.Cluster.Templates.FirstStage] = &fstest.MapFile{Data: installer}
	final, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", filepath.Base(cfg.Cluster.Templates.FinalConfig)))
	if err != nil {
		t.Fatal(err)
	}
	files[cfg.Cluster.Templates.FinalConfig] = &fstest.MapFile{Data: final}
	return cfg, files
}

// flatcarMachines are machines of every profile, with awkward metadata.
func flatcarContexts(t *testing.T, r *Renderer) []Context {
	var cs []Context
	for i, profile := range []string{"core", "worker", "default", "core"} {
		m := Sample()
		m.ID = fmt.Sprintf("5cg12%02dxyz", i)
		m.Profile = profile
		m.InternalAddr = fmt.Sprintf("10.99.0.%d", 10+i)
		m.MACs = append(m.MACs, fmt.Sprintf("52:54:00:00:01:%02x", i))
		m.Metadata = map[string]string{"rule-" + profile: "true", "note": "it's \"quoted\"\nand = more ünïcödé"}
		c := r.Context(m, strings.Repeat(fmt.Sprint(i), 64), "http://10.99.0.2:4081")
		c.Image = Image{SHA256: strings.Repeat("ab", 32), Size: 500 << 20}
		cs = append(cs, c)
	}
	return cs
}

func TestFlatcarExampleRendersValidIgnition(t *testing.T) {
	cfg, files := flatcarExample(t)
	r, err := New(files, cfg.Cluster)
	if err != nil {
		t.Fatalf("the Flatcar example's templates: %v", err)
	}
	if !r.FirstStageIsIgnition() {
		t.Fatal("first stage not Ignition")
	}
	for _, c := range flatcarContexts(t, r) {
		// iPXE hands the installer config to Flatcar's Ignition.
		ipxe := string(r.InstallerScript(c, cfg.Cluster.Install.KernelArgs))
		if !strings.Contains(ipxe, " ignition.config.url="+c.URLs.FirstStage+" ") || !strings.Contains(ipxe, " flatcar.first_boot=1 ") {
			t.Fatalf("installer script:\n%s", ipxe)
		}
		first, err := r.FirstStage(c)
		if err != nil {
			t.Fatalf("%s: installer config: %v", c.Machine.ID, err)
		}
		final, err := r.FinalConfig(c)
		if err != nil {
			t.Fatalf("%s: final config: %v", c.Machine.ID, err)
		}
		for name, doc := range map[string][]byte{"installer": first, "final": final} {
			if _, err := ignition.Validate(doc); err != nil {
				t.Fatalf("%s %s config: %v", c.Machine.ID, name, err)
			}
			ignitionValidate(t, doc)
		}
		inst := decodeInstaller(t, first)
		env := shellEnv(t, inst.files["/etc/mayu/install.env"])
		for k, want := range map[string]string{
			"ID": c.Machine.ID, "MAYU": c.MayuURL, "DISK": "/dev/sda", "IMAGE_URL": c.URLs.Image,
			"IMAGE_SHA256": c.Image.SHA256, "FINAL_CONFIG_URL": c.URLs.FinalConfig, "INSTALLED_URL": c.URLs.Installed,
			"FAILED_URL": c.URLs.Failed, "MAYU_URLS": cfg.Cluster.TemplateVars["mayu_urls"],
		} {
			if env[k] != want {
				t.Errorf("%s: install.env %s=%q, want %q", c.Machine.ID, k, env[k], want)
			}
		}
		if !strings.Contains(c.URLs.FirstStage, "token=") || !strings.Contains(env["INSTALLED_URL"], "?token="+c.Token) {
			t.Errorf("the installer's URLs lack the token: %q", env["INSTALLED_URL"])
		}
		if inst.modes["/etc/mayu/install.env"] != 0o600 || inst.modes["/opt/mayu/install.sh"] != 0o755 {
			t.Errorf("modes: %v", inst.modes)
		}
		for _, sh := range []string{"sh", "bash"} {
			if out, err := exec.Command(sh, "-n", "-c", inst.files["/opt/mayu/install.sh"]).CombinedOutput(); err != nil {
				t.Fatalf("%s -n install.sh: %v\n%s", sh, err, out)
			}
		}
		if !inst.enabled["mayu-install.service"] || !strings.Contains(inst.units["mayu-install.service"], "ExecStart=/opt/mayu/install.sh\n") {
			t.Fatalf("mayu-install.service is not installed and enabled: %+v", inst)
		}
	}
}

// A template variable holding shell, quotes or a newline stays one value
// of the environment file.
func TestFlatcarInstallerQuotesVariables(t *testing.T) {
	cfg, files := flatcarExample(t)
	// The final config is not this test's (it may refuse such a
	// mayu_urls of its own accord): a minimal one stands in.
	files[cfg.Cluster.Templates.FinalConfig] = &fstest.MapFile{Data: []byte(`{"ignition": {"version": "3.3.0"}}`)}
	hostile := "http://a:4081 http://b:4081'; reboot; '\n$(reboot) `reboot` \"x\""
	cfg.Cluster.TemplateVars = map[string]string{"mayu_urls": hostile, "ssh_authorized_key": "ssh-ed25519 AAAA x"}
	r, err := New(files, cfg.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	c := flatcarContexts(t, r)[0]
	first, err := r.FirstStage(c)
	if err != nil {
		t.Fatal(err)
	}
	ignitionValidate(t, first)
	env := shellEnv(t, decodeInstaller(t, first).files["/etc/mayu/install.env"])
	if env["MAYU_URLS"] != hostile || env["DISK"] != "/dev/sda" {
		t.Fatalf("install.env read back: %q", env)
	}
	if !strings.Contains(string(first), `"sshAuthorizedKeys":["ssh-ed25519 AAAA x"]`) {
		t.Errorf("the live system's core lacks the key:\n%s", first)
	}

	// Without template variables: one replica, no SSH key.
	cfg.Cluster.TemplateVars = nil
	if r, err = New(files, cfg.Cluster); err != nil {
		t.Fatal(err)
	}
	c = flatcarContexts(t, r)[0]
	if first, err = r.FirstStage(c); err != nil {
		t.Fatal(err)
	}
	ignitionValidate(t, first)
	env = shellEnv(t, decodeInstaller(t, first).files["/etc/mayu/install.env"])
	if env["MAYU_URLS"] != c.MayuURL || strings.Contains(string(first), "sshAuthorizedKeys") {
		t.Fatalf("without variables: MAYU_URLS=%q\n%s", env["MAYU_URLS"], first)
	}
}

// installerConfig is what the installer's Ignition config installs.
type installerConfig struct {
	files   map[string]string // decoded contents
	modes   map[string]int
	units   map[string]string
	enabled map[string]bool
}

func decodeInstaller(t *testing.T, doc []byte) installerConfig {
	t.Helper()
	var cfg struct {
		Storage struct {
			Files []struct {
				Path     string
				Mode     *int
				Contents struct{ Source *string }
			}
		}
		Systemd struct {
			Units []struct {
				Name     string
				Enabled  *bool
				Contents *string
			}
		}
	}
	if err := json.Unmarshal(doc, &cfg); err != nil {
		t.Fatal(err)
	}
	out := installerConfig{files: map[string]string{}, modes: map[string]int{}, units: map[string]string{}, enabled: map[string]bool{}}
	for _, f := range cfg.Storage.Files {
		if f.Contents.Source == nil || f.Mode == nil {
			t.Fatalf("file %s without contents or mode", f.Path)
		}
		out.files[f.Path] = decodeDataURL(t, *f.Contents.Source)
		out.modes[f.Path] = *f.Mode
	}
	for _, u := range cfg.Systemd.Units {
		if u.Contents != nil {
			out.units[u.Name] = *u.Contents
		}
		out.enabled[u.Name] = u.Enabled != nil && *u.Enabled
	}
	return out
}

// decodeDataURL decodes an RFC 2397 data URL, base64 or percent-encoded.
func decodeDataURL(t *testing.T, s string) string {
	t.Helper()
	header, data, ok := strings.Cut(strings.TrimPrefix(s, "data:"), ",")
	if !ok || !strings.HasPrefix(s, "data:") {
		t.Fatalf("not a data URL: %.60q", s)
	}
	if strings.HasSuffix(header, ";base64") {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	d, err := url.PathUnescape(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// shellEnv sources an environment file with sh and returns what it set.
func shellEnv(t *testing.T, env string) map[string]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "install.env")
	if err := os.WriteFile(path, []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	names := []string{"ID", "MAYU", "MAYU_URLS", "DISK", "IMAGE_URL", "IMAGE_SHA256", "FINAL_CONFIG_URL", "INSTALLED_URL", "FAILED_URL"}
	script := ". \"$1\" || exit 1\nfor v in " + strings.Join(names, " ") + "; do eval \"printf '%s\\\\0' \\\"\\${$v-UNSET}\\\"\"; done"
	out, err := exec.Command("sh", "-c", script, "sh", path).Output()
	if err != nil {
		t.Fatalf("sourcing install.env: %v\n%s", err, env)
	}
	vals := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(vals) != len(names) {
		t.Fatalf("install.env gave %d values for %d names:\n%s", len(vals), len(names), env)
	}
	m := map[string]string{}
	for i, n := range names {
		m[n] = vals[i]
	}
	return m
}

// ignitionValidate checks doc with Debian's ignition-validate (package
// ignition), an Ignition independent of the library mayu links.
func ignitionValidate(t *testing.T, doc []byte) {
	t.Helper()
	bin, err := exec.LookPath("ignition-validate")
	if err != nil {
		t.Fatalf("ignition-validate is missing (Debian package ignition; scripts/install-deps.sh): %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.ign")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("ignition-validate: %v\n%s\n%s", err, out, doc)
	}
}

// The installer script, run as the unit runs it, against two replicas
// over HTTP, with flatcar-install and systemctl standing in for Flatcar's
// (they record what they were asked). The first replica serves other
// bytes than the image's digest: the install moves on to the second, runs
// flatcar-install on the disk with the image and the final config, and
// announces installed. When every replica serves wrong bytes, it reports
// failed with the reason and never runs flatcar-install.
func TestFlatcarInstallScriptRuns(t *testing.T) {
	for _, sh := range []string{"sh", "bash"} {
		t.Run(sh+"/one replica bad", func(t *testing.T) { runInstaller(t, sh, false) })
		t.Run(sh+"/all replicas bad", func(t *testing.T) { runInstaller(t, sh, true) })
	}
}

type fakeReplica struct {
	srv   *httptest.Server
	mu    sync.Mutex
	posts []string // path: body
}

func newReplica(t *testing.T, image []byte, final string) *fakeReplica {
	f := &fakeReplica{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/boot.ipxe":
			io.WriteString(w, "#!ipxe\n")
		case r.URL.Path == "/boot/image":
			w.Write(image)
		case strings.HasSuffix(r.URL.Path, "/final-config"):
			io.WriteString(w, final)
		case r.Method == http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			f.mu.Lock()
			f.posts = append(f.posts, r.URL.Path+"?"+r.URL.RawQuery+": "+string(body))
			f.mu.Unlock()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeReplica) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.posts...)
}

func runInstaller(t *testing.T, sh string, allBad bool) {
	cfg, files := flatcarExample(t)
	good := []byte("BZh91AY&SY flatcar image bytes")
	sum := sha256.Sum256(good)
	bad := []byte("BZh91AY&SY other bytes")
	final := `{"ignition":{"version":"3.3.0"}}`
	r1 := newReplica(t, bad, final)
	second := good
	if allBad {
		second = bad
	}
	r2 := newReplica(t, second, final)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.Install.Disk = disk
	cfg.Cluster.TemplateVars["mayu_urls"] = r1.srv.URL + " " + r2.srv.URL
	r, err := New(files, cfg.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	c := flatcarContexts(t, r)[0]
	c = r.Context(c.Machine, "feedface", r1.srv.URL)
	c.Image = Image{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(good))}
	first, err := r.FirstStage(c)
	if err != nil {
		t.Fatal(err)
	}
	inst := decodeInstaller(t, first)
	env := filepath.Join(dir, "install.env")
	script := filepath.Join(dir, "install.sh")
	os.WriteFile(env, []byte(inst.files["/etc/mayu/install.env"]), 0o600)
	os.WriteFile(script, []byte(inst.files["/opt/mayu/install.sh"]), 0o755)
	// Flatcar's tools, recording their arguments and what they were given.
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	record := filepath.Join(dir, "record")
	os.WriteFile(filepath.Join(bin, "flatcar-install"), []byte("#!/bin/sh\necho \"flatcar-install $*\" >>"+record+
		"\nwhile getopts d:f:i: o; do case $o in f) cmp -s \"$OPTARG\" "+filepath.Join(dir, "want-image")+" && echo 'image ok' >>"+record+";;"+
		" i) cat \"$OPTARG\" >>"+record+"; echo >>"+record+";; esac; done\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "want-image"), good, 0o600)
	os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\necho \"systemctl $*\" >>"+record+"\n"), 0o755)
	cmd := exec.Command(sh, script)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "MAYU_INSTALL_ENV="+env, "MAYU_INSTALL_WORK="+filepath.Join(dir, "work"))
	out, err := cmd.CombinedOutput()
	rec, _ := os.ReadFile(record)
	posts := append(r1.got(), r2.got()...)
	node := "/machines/" + c.Machine.ID
	if allBad {
		if err == nil || len(rec) > 0 {
			t.Fatalf("installed from wrong bytes: %v\n%s\nrecord:\n%s", err, out, rec)
		}
		want := node + "/failed?token=feedface: image sha256 mismatch: got "
		if len(posts) != 1 || !strings.HasPrefix(posts[0], want) {
			t.Fatalf("posts %q, want one %q…\n%s", posts, want, out)
		}
		return
	}
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	wantRec := fmt.Sprintf("flatcar-install -d %s -f %s -i %s\nimage ok\n%s\nsystemctl reboot\n", disk,
		filepath.Join(dir, "work", "flatcar_production_image.bin.bz2"), filepath.Join(dir, "work", "final-config.ign"), final)
	if string(rec) != wantRec {
		t.Fatalf("flatcar-install and systemctl were run as:\n%s\nwant:\n%s\noutput:\n%s", rec, wantRec, out)
	}
	// r1 served wrong bytes, so everything after went to r2.
	if p := r2.got(); len(r1.got()) != 0 || len(p) != 1 || p[0] != node+"/installed?token=feedface: " {
		t.Fatalf("posts: r1 %q, r2 %q\n%s", r1.got(), p, out)
	}
	if !strings.Contains(string(out), "image sha256 mismatch") {
		t.Errorf("the mismatch at the first replica is not logged:\n%s", out)
	}
}
