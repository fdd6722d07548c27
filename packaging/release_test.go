package packaging

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The version the test release is stamped with, and its Debian spelling.
const (
	version    = "v1.2.3-test"
	debVersion = "1.2.3+test"
)

// release is built once for every test of the package.
var release struct {
	dir  string
	err  error
	skip string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if release.dir != "" {
		os.RemoveAll(release.dir)
	}
	os.Exit(code)
}

// build runs scripts/release.sh for this machine's architecture into a
// temporary directory (the arm64 build is `make release`'s).
func build(t *testing.T) string {
	t.Helper()
	if release.dir == "" && release.err == nil && release.skip == "" {
		release.skip, release.err = buildRelease()
	}
	if release.skip != "" {
		t.Skip(release.skip)
	}
	if release.err != nil {
		t.Fatal(release.err)
	}
	return release.dir
}

func buildRelease() (skip string, err error) {
	if runtime.GOOS != "linux" {
		return "releases are built on Linux", nil
	}
	for _, tool := range []string{"go", "dpkg-deb", "sha256sum", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not in PATH (dpkg-deb: package dpkg)", nil
		}
	}
	dir, err := os.MkdirTemp("", "mayu-release-")
	if err != nil {
		return "", err
	}
	release.dir = dir
	cmd := exec.Command("../scripts/release.sh")
	cmd.Env = append(os.Environ(), "VERSION="+version, "ARCHES="+runtime.GOARCH, "DIST="+dir, "SOURCE_DATE_EPOCH=1700000000", "DEB_COMPRESSION=gzip")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/release.sh: %v\n%s", err, out)
	}
	return "", nil
}

// The binaries are static, stripped, stamped with the release's version,
// and SHA256SUMS names each file of the release with its digest.
func TestBinaries(t *testing.T) {
	dist := build(t)
	for _, prog := range []string{"mayu", "mayuctl"} {
		path := filepath.Join(dist, prog+"-linux-"+runtime.GOARCH)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v)", prog, p.Type)
			}
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s is not stripped: it has .symtab", prog)
		}
		f.Close()
		out, err := exec.Command(path, "-version").Output()
		if prog == "mayuctl" {
			out, err = exec.Command(path, "version").Output()
		}
		if want := prog + " " + version + "\n"; err != nil || string(out) != want {
			t.Errorf("%s version: %v %q, want %q", prog, err, out, want)
		}
		// -trimpath: no path of the build machine in the binary.
		if b, _ := os.ReadFile(path); strings.Contains(string(b), mustGetwd(t)) {
			t.Errorf("%s holds the build directory %s", prog, mustGetwd(t))
		}
	}

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", line)
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	for _, name := range []string{"mayu-linux-" + runtime.GOARCH, "mayuctl-linux-" + runtime.GOARCH,
		deb(), "mayu_" + version + "_oci.tar"} {
		if !listed[name] {
			t.Errorf("SHA256SUMS lacks %s:\n%s", name, sums)
		}
	}
}

func deb() string { return "mayu_" + debVersion + "_" + runtime.GOARCH + ".deb" }

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd) // the repository
}

// packaged are files the .deb must carry.
var packaged = []string{
	"/usr/bin/mayu", "/usr/bin/mayuctl", "/lib/systemd/system/mayu.service",
	"/etc/mayu/mayu.yaml", "/etc/mayu/templates/first-stage.sh",
	"/etc/mayu/templates/final-config.ign.yaml", "/etc/mayu/templates/final-config.yaml",
	"/usr/share/doc/mayu/README.md", "/usr/share/doc/mayu/changelog.gz", "/usr/share/doc/mayu/CHANGELOG.md.gz", "/usr/share/doc/mayu/copyright",
	"/usr/share/doc/mayu/etcd.md", "/usr/share/doc/mayu/security.md",
	"/usr/share/bash-completion/completions/mayuctl", "/usr/share/zsh/vendor-completions/_mayuctl",
	"/usr/share/fish/vendor_completions.d/mayuctl.fish",
	"/usr/share/man/man1/mayuctl.1.gz", "/usr/share/man/man8/mayu.8.gz",
}

// The package's metadata and contents, read with dpkg-deb.
func TestDebContents(t *testing.T) {
	dist := build(t)
	path := filepath.Join(dist, deb())
	out, err := exec.Command("dpkg-deb", "--contents", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	contents := string(out)
	for _, f := range packaged {
		if !strings.Contains(contents, " ."+f+"\n") {
			t.Errorf("the package lacks %s", f)
		}
	}
	// Every file is root's: --root-owner-group.
	for _, line := range strings.Split(strings.TrimSpace(contents), "\n") {
		if fields := strings.Fields(line); len(fields) < 2 || fields[1] != "root/root" {
			t.Errorf("not owned by root: %s", line)
		}
	}
	// The admin tokens file holds secrets: the operator writes it.
	if strings.Contains(contents, "admin-tokens") {
		t.Error("the package ships an admin tokens file")
	}
	for field, want := range map[string]string{"Package": "mayu", "Version": debVersion, "Architecture": runtime.GOARCH, "Depends": "adduser"} {
		if out, err := exec.Command("dpkg-deb", "--field", path, field).Output(); err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s: %q (%v), want %q", field, out, err, want)
		}
	}
	out, err = exec.Command("dpkg-deb", "--info", path, "conffiles").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/etc/mayu/mayu.yaml", "/etc/mayu/templates/first-stage.sh"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("conffiles lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "/usr/") {
		t.Errorf("a file outside /etc is a conffile:\n%s", out)
	}
	// The maintainer scripts never start or enable mayu.
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		out, err := exec.Command("dpkg-deb", "--info", path, script).Output()
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, "#") {
				continue
			}
			for _, bad := range []string{"systemctl start", "systemctl enable", "systemctl restart", "deb-systemd-invoke start", "deb-systemd-helper enable"} {
				if strings.Contains(line, bad) {
					t.Errorf("%s runs %q: %s", script, bad, line)
				}
			}
		}
	}
}

// lintian finds no error in the package.
func TestDebLintian(t *testing.T) {
	dist := build(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Skip("lintian not installed (package lintian)")
	}
	out, err := exec.Command("lintian", "--fail-on", "error", filepath.Join(dist, deb())).CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	t.Logf("lintian:\n%s", out)
}

// The package installs on this Debian (CI runs as root; a test machine),
// creates the mayu user, never enables or starts mayu, carries a unit
// systemd accepts and a mayu that checks a configuration from the packaged
// paths; a purge takes all of it away again, the user and its state too.
func TestDebInstallPurge(t *testing.T) {
	dist := build(t)
	if os.Geteuid() != 0 {
		t.Skip("installing a package needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "mayu").Output(); strings.Contains(string(out), "installed") {
		t.Skipf("a mayu package is installed already (%s): not this test's to remove", out)
	}
	if _, err := user.Lookup("mayu"); err == nil {
		t.Skip("a mayu user exists already: a purge would remove it")
	}
	if _, err := os.Stat("/var/lib/mayu"); err == nil {
		t.Skip("/var/lib/mayu exists already: a purge would remove it")
	}

	purge := func() ([]byte, error) { return exec.Command("dpkg", "--purge", "mayu").CombinedOutput() }
	if out, err := exec.Command("dpkg", "-i", filepath.Join(dist, deb())).CombinedOutput(); err != nil {
		purge()
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	purged := false
	t.Cleanup(func() {
		if !purged {
			purge()
		}
	})

	for _, f := range packaged {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	u, err := user.Lookup("mayu")
	if err != nil {
		t.Fatalf("postinst made no mayu user: %v", err)
	}
	if u.HomeDir != "/var/lib/mayu" {
		t.Errorf("mayu's home is %s, want /var/lib/mayu", u.HomeDir)
	}
	if _, err := user.LookupGroup("mayu"); err != nil {
		t.Errorf("postinst made no mayu group: %v", err)
	}
	// Neither enabled (no link in any .wants directory) nor started.
	if links, _ := filepath.Glob("/etc/systemd/system/*.wants/mayu.service"); len(links) != 0 {
		t.Errorf("mayu is enabled: %v", links)
	}
	if pids := processes(t, "/usr/bin/mayu"); len(pids) != 0 {
		t.Errorf("mayu runs after the install: pids %v", pids)
	}

	unit, err := os.ReadFile("/lib/systemd/system/mayu.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/mayu -config /etc/mayu/mayu.yaml", "ExecStartPre=/usr/bin/mayu -check", "User=mayu"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the packaged unit lacks %q", want)
		}
	}
	if strings.Contains(string(unit), "/usr/local/") {
		t.Error("the packaged unit names /usr/local")
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(analyze, "verify", "/lib/systemd/system/mayu.service").CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not installed (package systemd): the unit is not verified")
	}

	if out, err := exec.Command("/usr/bin/mayu", "-version").Output(); err != nil || string(out) != "mayu "+version+"\n" {
		t.Errorf("/usr/bin/mayu -version: %v %q", err, out)
	}

	// The skeleton as shipped: -check tells the operator what is missing
	// (the installer files, the tokens file), each by name; it never
	// passes silently on a skeleton without them, nor crashes.
	out, err := exec.Command("/usr/bin/mayu", "-check", "-config", "/etc/mayu/mayu.yaml").CombinedOutput()
	t.Logf("mayu -check on the shipped skeleton: %v\n%s", err, out)
	if err == nil {
		t.Error("mayu -check passes the skeleton, which names files the package does not ship")
	} else if strings.Contains(string(out), "panic") || !strings.Contains(string(out), "mayu: ") {
		t.Errorf("mayu -check on the skeleton: no clear error:\n%s", out)
	}

	// The skeleton completed as an operator would: the packaged templates
	// copied under node.files_dir, installer and iPXE files, a tokens file.
	cfgPath := completeSkeleton(t)
	if out, err := exec.Command("/usr/bin/mayu", "-check", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Errorf("mayu -check on the completed skeleton: %v\n%s", err, out)
	}

	// A replica would have written its state: the purge removes it.
	if err := os.MkdirAll("/var/lib/mayu/member", 0o700); err != nil {
		t.Fatal(err)
	}
	out, err = purge()
	purged = true
	if err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, f := range append(packaged, "/etc/mayu", "/var/lib/mayu", "/usr/share/doc/mayu") {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after the purge: %s: %v", f, err)
		}
	}
	if _, err := user.Lookup("mayu"); err == nil {
		t.Error("the purge left the mayu user")
	}
	if _, err := user.LookupGroup("mayu"); err == nil {
		t.Error("the purge left the mayu group")
	}
}

// completeSkeleton writes a copy of the packaged /etc/mayu/mayu.yaml whose
// files, templates and tokens are in a temporary directory, and returns
// its path.
func completeSkeleton(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, boot := filepath.Join(dir, "files"), filepath.Join(dir, "boot")
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	templates, err := filepath.Glob("/etc/mayu/templates/*")
	if err != nil || len(templates) == 0 {
		t.Fatalf("no packaged templates: %v", err)
	}
	for _, tpl := range templates {
		b, err := os.ReadFile(tpl)
		if err != nil {
			t.Fatal(err)
		}
		write(filepath.Join(files, "templates", filepath.Base(tpl)), string(b))
	}
	write(filepath.Join(files, "installer/vmlinuz"), "kernel")
	write(filepath.Join(files, "installer/initrd.img"), "initrd")
	write(filepath.Join(files, "images/os.img"), "image")
	write(filepath.Join(boot, "undionly.kpxe"), "ipxe")
	write(filepath.Join(boot, "ipxe.efi"), "ipxe")
	tokens := filepath.Join(dir, "admin-tokens.yaml")
	write(tokens, "tokens:\n  - {name: test, role: admin, token: \"0123456789abcdef0123456789abcdef\"}\n")

	b, err := os.ReadFile("/etc/mayu/mayu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for old, repl := range map[string]string{
		"interface: srv0":                          "interface: lo", // exists, with an address, on every machine
		"files_dir: /usr/share/mayu/files":         "files_dir: " + files,
		"boot_files_dir: /usr/share/mayu/boot":     "boot_files_dir: " + boot,
		"tokens_file: /etc/mayu/admin-tokens.yaml": "tokens_file: " + tokens,
		"data_dir: /var/lib/mayu":                  "data_dir: " + filepath.Join(dir, "data"),
		"cache_dir: /var/lib/mayu/artifacts":       "cache_dir: " + filepath.Join(dir, "artifacts"),
	} {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("the packaged mayu.yaml has %d lines %q: update this test", strings.Count(cfg, old), old)
		}
		cfg = strings.Replace(cfg, old, repl, 1)
	}
	path := filepath.Join(dir, "mayu.yaml")
	write(path, cfg)
	return path
}

// processes are the pids whose executable is exe.
func processes(t *testing.T, exe string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.TrimSuffix(target, " (deleted)") == exe {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// ociLayout reads the image index the layout's reference names, checking
// every blob against its digest on the way.
type ociLayout struct {
	t   *testing.T
	dir string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

func (l ociLayout) blob(d descriptor) []byte {
	l.t.Helper()
	algo, hexsum, ok := strings.Cut(d.Digest, ":")
	if !ok || algo != "sha256" {
		l.t.Fatalf("digest %q", d.Digest)
	}
	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", algo, hexsum))
	if err != nil {
		l.t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexsum || int64(len(b)) != d.Size {
		l.t.Fatalf("blob %s: content does not match its digest or size", d.Digest)
	}
	return b
}

func (l ociLayout) decode(b []byte, v any) {
	l.t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		l.t.Fatal(err)
	}
}

// The image, read by hand: the layout, the index under the release's
// reference, the manifest of this architecture, its configuration, and a
// mayu from its layer that runs.
func TestOCIImage(t *testing.T) {
	dist := build(t)
	l := ociLayout{t: t, dir: filepath.Join(dist, "oci")}
	b, err := os.ReadFile(filepath.Join(l.dir, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	var marker struct{ ImageLayoutVersion string }
	if l.decode(b, &marker); marker.ImageLayoutVersion != "1.0.0" {
		t.Fatalf("oci-layout: %s", b)
	}
	b, err = os.ReadFile(filepath.Join(l.dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top struct{ Manifests []descriptor }
	l.decode(b, &top)
	if len(top.Manifests) != 1 || top.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != version ||
		top.Manifests[0].MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("index.json: %s", b)
	}
	var idx struct{ Manifests []descriptor }
	l.decode(l.blob(top.Manifests[0]), &idx)
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	for _, m := range idx.Manifests {
		if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
			if m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
				t.Errorf("manifest media type %s", m.MediaType)
			}
			l.decode(l.blob(m), &manifest)
		}
	}
	if len(manifest.Layers) != 1 {
		t.Fatalf("no linux/%s manifest with one layer in %+v", runtime.GOARCH, idx)
	}
	var config struct {
		Architecture, OS string
		Config           struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		}
	}
	l.decode(l.blob(manifest.Config), &config)
	c := config.Config
	if config.OS != "linux" || config.Architecture != runtime.GOARCH ||
		strings.Join(c.Entrypoint, " ") != "/usr/bin/mayu" || strings.Join(c.Cmd, " ") != "-config /etc/mayu/mayu.yaml" ||
		c.Labels["org.opencontainers.image.version"] != version || c.Labels["org.opencontainers.image.source"] == "" {
		t.Errorf("image config: %+v", config)
	}

	// The layer: what the image runs, and a mayu that runs here.
	zr, err := gzip.NewReader(strings.NewReader(string(l.blob(manifest.Layers[0]))))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	found := map[string]bool{}
	root := t.TempDir()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[h.Name] = true
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		if h.Name == "usr/bin/mayu" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "mayu"), b, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, want := range []string{"usr/bin/mayu", "usr/bin/mayuctl", "etc/mayu/mayu.yaml", "etc/mayu/templates/first-stage.sh", "var/lib/mayu/"} {
		if !found[want] {
			t.Errorf("the layer lacks %s", want)
		}
	}
	if out, err := exec.Command(filepath.Join(root, "mayu"), "-version").Output(); err != nil || string(out) != "mayu "+version+"\n" {
		t.Errorf("the image's mayu -version: %v %q", err, out)
	}
}

// skopeo reads the layout and the archive as any registry tool would.
func TestOCISkopeo(t *testing.T) {
	dist := build(t)
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo not installed (package skopeo)")
	}
	for _, ref := range []string{"oci:" + filepath.Join(dist, "oci") + ":" + version,
		"oci-archive:" + filepath.Join(dist, "mayu_"+version+"_oci.tar") + ":" + version} {
		out, err := exec.Command(skopeo, "inspect", "--override-os", "linux", "--override-arch", runtime.GOARCH, ref).Output()
		if err != nil {
			t.Errorf("skopeo inspect %s: %v\n%s", ref, err, stderr(err))
			continue
		}
		var info struct {
			Architecture, Os string
			Labels           map[string]string
			Layers           []string
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		if info.Architecture != runtime.GOARCH || info.Os != "linux" || info.Labels["org.opencontainers.image.version"] != version || len(info.Layers) != 1 {
			t.Errorf("skopeo inspect %s: %s", ref, out)
		}
	}
}

// umoci unpacks the image into a bundle whose mayu runs, with the
// entrypoint in the bundle's runtime configuration.
func TestOCIUmoci(t *testing.T) {
	dist := build(t)
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci not installed (package umoci)")
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command(umoci, "unpack", "--rootless", "--image", filepath.Join(dist, "oci")+":"+version, bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(bundle, "rootfs/usr/bin/mayu"), "-version").Output(); err != nil || string(out) != "mayu "+version+"\n" {
		t.Errorf("rootfs/usr/bin/mayu -version: %v %q", err, out)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Process struct{ Args []string }
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(spec.Process.Args, " "); got != "/usr/bin/mayu -config /etc/mayu/mayu.yaml" {
		t.Errorf("the bundle runs %q", got)
	}
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
