package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/pkg/config"
)

// make flatcar-demo says what is missing before it starts anything.
func TestCheckFlatcarDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(d, key string, want ...string) {
		t.Helper()
		_, err := checkFlatcarDir(d, key)
		if err == nil {
			t.Fatalf("checkFlatcarDir(%q, %q) passed", d, key)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}
	expect("", "", "FLATCAR_DIR", "flatcar_production_image.bin.bz2.DIGESTS.asc", flatcarKeyFile)
	expect(filepath.Join(dir, "nope"), "", "is not a directory")
	write("flatcar_production_pxe.vmlinuz", "k")
	write("flatcar_production_pxe.vmlinuz.DIGESTS.asc", "d")
	write("flatcar_production_image.bin.bz2", "") // empty: a failed download
	expect(dir, "", "lacks flatcar_production_pxe_image.cpio.gz, flatcar_production_pxe_image.cpio.gz.DIGESTS.asc, flatcar_production_image.bin.bz2, flatcar_production_image.bin.bz2.DIGESTS.asc: fetch them from https://stable.release.flatcar-linux.net/")
	for _, a := range flatcarArtifacts {
		write(a.file, "x")
		write(a.file+".DIGESTS.asc", "x")
	}
	expect(dir, "", flatcarKeyFile, "FLATCAR_KEY")
	write(flatcarKeyFile, "<html>not found</html>")
	expect(dir, "", "no armored public key")
	write(flatcarKeyFile, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n-----END PGP PUBLIC KEY BLOCK-----\n")
	r, err := checkFlatcarDir(dir, "")
	if err != nil || r.dir != dir || r.key != filepath.Join(dir, flatcarKeyFile) {
		t.Fatalf("complete directory: %+v, %v", r, err)
	}
	write("other.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
	if r, err := checkFlatcarDir(dir, filepath.Join(dir, "other.asc")); err != nil || r.key != filepath.Join(dir, "other.asc") {
		t.Fatalf("-flatcar-key: %+v, %v", r, err)
	}
}

// The demo's replica config is the lab's with the Flatcar example's
// install and templates sections, and mayu accepts it.
func TestFlatcarDemoConfig(t *testing.T) {
	dir := t.TempDir()
	top, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if err := fixture.WriteFiles(dir, fixture.Files{Templates: filepath.Join(top, "etc", "templates")}); err != nil {
		t.Fatal(err)
	}
	path, err := fixture.Config{Dir: dir, Interface: "eth0", KernelArgs: "console=ttyS0"}.Write()
	if err != nil {
		t.Fatal(err)
	}
	d := &demoRun{top: top}
	if err := d.flatcarConfig(dir, path); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("mayu refuses the demo's config: %v", err)
	}
	tm := cfg.Cluster.Templates
	if tm.FirstStage != "templates/installer.ign.yaml" || tm.FirstStageFormat != config.FormatIgnition || tm.FinalConfigFormat != config.FormatIgnition {
		t.Errorf("templates: %+v", tm)
	}
	for i, role := range []string{"kernel", "initrd", "image"} {
		if got := cfg.Cluster.Source("", role); got != "artifact:"+flatcarArtifacts[i].artifact {
			t.Errorf("%s: %q", role, got)
		}
	}
	if !strings.Contains(cfg.Cluster.Install.KernelArgs, "flatcar.first_boot=1") || cfg.Cluster.Install.Disk != "/dev/vda" {
		t.Errorf("install: %+v", cfg.Cluster.Install)
	}
	if _, err := os.Stat(filepath.Join(fixture.FilesDir(dir), "templates", "installer.ign.yaml")); err != nil {
		t.Errorf("the installer template is not in the files directory: %v", err)
	}
}
