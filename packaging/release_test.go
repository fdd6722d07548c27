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
	"strconv"
	"strings"
	"syscall"
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

// A Debian version sorts as the releases do: a release candidate before
// its release, a build after a tag after that tag.
func TestDebVersion(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	debversion := func(v string) string {
		t.Helper()
		out, err := exec.Command("../scripts/release.sh", "--debversion", v).Output()
		if err != nil {
			t.Fatalf("release.sh --debversion %s: %v %s", v, err, stderr(err))
		}
		return strings.TrimSpace(string(out))
	}
	for v, want := range map[string]string{
		"v0.2.0": "0.2.0", "v0.2.0-rc1": "0.2.0~rc1", "v0.2.0-rc1-3-gabc1234": "0.2.0~rc1+3+gabc1234",
		"v0.2.0-3-gabc1234": "0.2.0+3+gabc1234", "v1.0.0-alpha": "1.0.0~alpha", "v1.0.0-beta.2": "1.0.0~beta.2",
		"c004b1e": "0~c004b1e", "c004b1e-dirty": "0~c004b1e+dirty", version: debVersion,
	} {
		if got := debversion(v); got != want {
			t.Errorf("%s: %s, want %s", v, got, want)
		}
	}
	// In the order git describe gives them over a release's life.
	order := []string{"c004b1e", "v0.1.0", "v0.2.0-alpha", "v0.2.0-beta.2", "v0.2.0-rc1", "v0.2.0-rc1-3-gabc1234",
		"v0.2.0-rc2", "v0.2.0", "v0.2.0-3-gabc1234", "v0.2.1-rc1", "v0.2.1"}
	for i := 1; i < len(order); i++ {
		a, b := debversion(order[i-1]), debversion(order[i])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("%s (%s) does not sort before %s (%s)", order[i-1], a, order[i], b)
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
	"/etc/mayu/mayu.yaml", "/usr/share/mayu/templates/first-stage.sh",
	"/usr/share/mayu/templates/final-config.ign.yaml", "/usr/share/mayu/templates/final-config.yaml",
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
	// The configuration only: the templates are package data, copied by
	// postinst to where mayu reads them.
	if string(out) != "/etc/mayu/mayu.yaml\n" {
		t.Errorf("conffiles: %q, want /etc/mayu/mayu.yaml alone", out)
	}
	// Debian packages ship nothing in /srv (site data): postinst makes it.
	if strings.Contains(contents, " ./srv/") {
		t.Error("the package ships files in /srv")
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
// creates the mayu user, keeps the configuration from other users, never
// enables or starts mayu, carries a unit systemd accepts and a
// configuration that mayu checks from the packaged paths with nothing
// missing but what the operator supplies; a purge takes the package's
// files away and keeps the user, the state and the operator's files.
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
	if _, err := os.Lstat("/srv/mayu"); err == nil {
		t.Skip("/srv/mayu exists already: not this test's to fill and remove")
	}
	// What the test makes (through the package) it removes at the end:
	// the purge keeps the user and /var/lib/mayu on purpose.
	_, errUser := user.Lookup("mayu")
	_, errGroup := user.LookupGroup("mayu")
	_, errState := os.Lstat("/var/lib/mayu")
	t.Cleanup(func() {
		os.RemoveAll("/srv/mayu")
		if errState != nil {
			os.RemoveAll("/var/lib/mayu")
		}
		if errUser != nil {
			exec.Command("deluser", "--quiet", "--system", "mayu").Run()
		}
		if errGroup != nil {
			exec.Command("delgroup", "--quiet", "--system", "mayu").Run()
		}
	})

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
	g, err := user.LookupGroup("mayu")
	if err != nil {
		t.Fatalf("postinst made no mayu group: %v", err)
	}
	// mayu.yaml holds secrets (cluster.template_vars): root writes it,
	// mayu reads it, nobody else.
	for path, mode := range map[string]os.FileMode{"/etc/mayu": os.ModeDir | 0o750, "/etc/mayu/mayu.yaml": 0o640} {
		if st, err := os.Stat(path); err != nil {
			t.Error(err)
		} else if sys := st.Sys().(*syscall.Stat_t); st.Mode() != mode || sys.Uid != 0 || fmt.Sprint(sys.Gid) != g.Gid {
			t.Errorf("%s: %v %d:%d, want %v root:mayu", path, st.Mode(), sys.Uid, sys.Gid, mode)
		}
	}
	if out, err := exec.Command("dpkg-statoverride", "--list", "/etc/mayu*").Output(); err != nil ||
		!strings.Contains(string(out), "root mayu 640 /etc/mayu/mayu.yaml\n") || !strings.Contains(string(out), "root mayu 750 /etc/mayu\n") {
		t.Errorf("dpkg-statoverride --list: %v\n%s", err, out)
	}
	// The templates, copied where mayu reads them (node.files_dir).
	shipped, err := filepath.Glob("/usr/share/mayu/templates/*")
	if err != nil || len(shipped) == 0 {
		t.Fatalf("no packaged templates: %v", err)
	}
	for _, tpl := range shipped {
		want, _ := os.ReadFile(tpl)
		if got, err := os.ReadFile(filepath.Join("/srv/mayu/files/templates", filepath.Base(tpl))); err != nil || string(got) != string(want) {
			t.Errorf("postinst did not copy %s to /srv/mayu/files/templates: %v", tpl, err)
		}
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

	// The configuration as shipped, checked as the unit's ExecStartPre
	// does (as mayu): it fails for what the operator must supply (the
	// installer files, the tokens file, the interface) and for nothing
	// else: the templates are found and render, the configuration is
	// readable by mayu.
	out := checkShipped(t)
	t.Logf("mayu -check on the shipped configuration:\n%s", out)
	operators := []string{"cluster.install.kernel", "cluster.install.initrd", "cluster.install.image",
		"node.admin.tokens_file", "node.interface", "warning: cluster.boot."}
	missing := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		key, ok := "", false
		for _, k := range operators {
			if strings.Contains(line, k) {
				key, ok = k, true
			}
		}
		if !ok && strings.HasPrefix(line, "mayu: ") && !strings.HasPrefix(line, "mayu: warning: ") && !strings.HasSuffix(line, " problems") {
			t.Errorf("mayu -check on the shipped configuration fails for more than the operator's files: %s", line)
		}
		if strings.Contains(line, "templates") {
			t.Errorf("mayu -check: the shipped templates are not read: %s", line)
		}
		missing[key] = ok
	}
	for _, k := range operators[:5] {
		if !missing[k] {
			t.Errorf("mayu -check on the shipped configuration does not name %s:\n%s", k, out)
		}
	}

	// The operator's part supplied at the packaged paths (the interface
	// and the tokens file in a copy of the configuration): -check passes
	// with the templates postinst copied, unedited.
	cfgPath := completeShipped(t)
	if out, err := exec.Command("/usr/bin/mayu", "-check", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Errorf("mayu -check on the completed configuration: %v\n%s", err, out)
	}

	// A replica would have written its state; the operator edited a
	// template. The purge keeps both, and the installer files.
	if errState != nil {
		if err := os.MkdirAll("/var/lib/mayu/member", 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The iPXE binaries gone again: the purge removes the empty
	// /srv/mayu/boot it made.
	for _, f := range []string{"/srv/mayu/boot/undionly.kpxe", "/srv/mayu/boot/ipxe.efi"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	edited := filepath.Join("/srv/mayu/files/templates", filepath.Base(shipped[0]))
	if err := os.WriteFile(edited, []byte("# the operator's\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// An upgrade (the same package again) keeps the operator's template
	// and the mode the admin chose for mayu.yaml.
	if out, err := exec.Command("dpkg-statoverride", "--remove", "/etc/mayu/mayu.yaml").CombinedOutput(); err != nil {
		t.Fatalf("dpkg-statoverride --remove: %v\n%s", err, out)
	}
	if out, err := exec.Command("dpkg-statoverride", "--update", "--add", "mayu", "mayu", "0600", "/etc/mayu/mayu.yaml").CombinedOutput(); err != nil {
		t.Fatalf("dpkg-statoverride: %v\n%s", err, out)
	}
	if out, err := exec.Command("dpkg", "-i", filepath.Join(dist, deb())).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i again: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(edited); string(b) != "# the operator's\n" {
		t.Errorf("the upgrade replaced the operator's %s: %q", edited, b)
	}
	if st, err := os.Stat("/etc/mayu/mayu.yaml"); err != nil || st.Mode() != 0o600 || fmt.Sprint(st.Sys().(*syscall.Stat_t).Uid) != u.Uid {
		t.Errorf("the upgrade changed the admin's mode of mayu.yaml: %v %v", st.Mode(), err)
	}

	out2, err := purge()
	purged = true
	if err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out2)
	}
	for _, f := range append(packaged, "/etc/mayu", "/usr/share/doc/mayu", "/usr/share/mayu", "/srv/mayu/boot") {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after the purge: %s: %v", f, err)
		}
	}
	for _, tpl := range shipped[1:] {
		if f := filepath.Join("/srv/mayu/files/templates", filepath.Base(tpl)); fileExists(f) {
			t.Errorf("after the purge: the unedited copy %s is left", f)
		}
	}
	kept := []string{edited, "/srv/mayu/files/installer/vmlinuz", "/srv/mayu/files/images/os.img"}
	if errState != nil {
		kept = append(kept, "/var/lib/mayu/member")
	}
	for _, f := range kept {
		if !fileExists(f) {
			t.Errorf("the purge removed %s", f)
		}
	}
	if _, err := user.Lookup("mayu"); err != nil {
		t.Errorf("the purge removed the mayu user: %v", err)
	}
	if _, err := user.LookupGroup("mayu"); err != nil {
		t.Errorf("the purge removed the mayu group: %v", err)
	}
	if out, _ := exec.Command("dpkg-statoverride", "--list", "/etc/mayu*").Output(); len(out) != 0 {
		t.Errorf("the purge left stat overrides:\n%s", out)
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkShipped runs `mayu -check -config /etc/mayu/mayu.yaml` as the mayu
// user, as the unit's ExecStartPre does, and returns its output; it must
// fail (the operator's files are missing) with a clear error.
func checkShipped(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("/usr/bin/mayu", "-check", "-config", "/etc/mayu/mayu.yaml")
	u, err := user.Lookup("mayu")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Error("mayu -check passes the shipped configuration, which names files the package does not ship")
	} else if strings.Contains(string(out), "panic") || !strings.Contains(string(out), "mayu: ") {
		t.Errorf("mayu -check on the shipped configuration: no clear error:\n%s", out)
	}
	// Only errors count: -check warns that /var/lib/mayu cannot be made
	// by the mayu user (systemd's StateDirectory= makes it before
	// ExecStartPre runs).
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "permission denied") && !strings.HasPrefix(line, "mayu: warning: ") {
			t.Errorf("mayu cannot read its configuration:\n%s", out)
			break
		}
	}
	return string(out)
}

// completeShipped supplies what the operator must, as the operator would:
// installer files under /srv/mayu/files, iPXE binaries under
// /srv/mayu/boot; the interface, the tokens file and the state in a copy
// of the packaged /etc/mayu/mayu.yaml, whose path it returns. The
// templates stay where the package put them.
func completeShipped(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("/srv/mayu/files/installer/vmlinuz", "kernel")
	write("/srv/mayu/files/installer/initrd.img", "initrd")
	write("/srv/mayu/files/images/os.img", "image")
	write("/srv/mayu/boot/undionly.kpxe", "ipxe")
	write("/srv/mayu/boot/ipxe.efi", "ipxe")
	tokens := filepath.Join(dir, "admin-tokens.yaml")
	write(tokens, "tokens:\n  - {name: test, role: admin, token: \"0123456789abcdef0123456789abcdef\"}\n")

	b, err := os.ReadFile("/etc/mayu/mayu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for _, want := range []string{"  files_dir: /srv/mayu/files\n", "  boot_files_dir: /srv/mayu/boot\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("the packaged mayu.yaml lacks %q", want)
		}
	}
	for old, repl := range map[string]string{
		"interface: srv0":                          "interface: lo", // exists, with an address, on every machine
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
		if h.Name == "etc/mayu/mayu.yaml" {
			// The templates it names are where the image has them.
			if b, err := io.ReadAll(tr); err != nil || !strings.Contains(string(b), "\n  files_dir: /srv/mayu/files\n") {
				t.Errorf("the image's mayu.yaml does not set files_dir: /srv/mayu/files (%v)", err)
			}
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
	for _, want := range []string{"usr/bin/mayu", "usr/bin/mayuctl", "etc/mayu/mayu.yaml", "srv/mayu/files/templates/first-stage.sh", "srv/mayu/boot/", "var/lib/mayu/"} {
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
