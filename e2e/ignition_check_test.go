package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/fixture"
)

// `mayu -check` with a final config declared Ignition: the shipped
// example passes; a template whose config does not validate for the
// sample machine fails with the key, the path and Ignition's message;
// Ignition's warnings are printed and do not fail the check.
func TestCheckValidatesIgnitionTemplates(t *testing.T) {
	if bins.mayu == "" {
		t.Skip("needs root (see TestMain)")
	}
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "process-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	tmpl, err := fixture.ModuleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	templates := map[string]string{
		"bad.ign.yaml":  "ignition: {version: \"3.3.0\"}\nstorage: {files: [{path: {{yaml .Machine.Hostname}}}]}\n",
		"warn.ign.yaml": "ignition: {version: \"3.3.0\"}\nstorage: {files: [{path: /usr/bin/x, mode: 2541}]}\n",
	}
	shipped, err := os.ReadFile(filepath.Join(tmpl, "final-config.ign.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	templates["final-config.ign.yaml"] = string(shipped)
	for name, data := range templates {
		if err := os.WriteFile(filepath.Join(dir, "files", "templates", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(final string) (string, error) {
		c, err := fixture.Loopback(dir)
		if err != nil {
			t.Fatal(err)
		}
		c.Name = "check"
		path, err := c.Write()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		cfg := strings.Replace(string(data), "final_config: templates/final-config.yaml}",
			"final_config: templates/"+final+", final_config_format: ignition}", 1)
		if cfg == string(data) {
			t.Fatalf("fixture's templates line changed:\n%s", data)
		}
		os.WriteFile(path, []byte(cfg), 0o644)
		out, err := exec.Command(bins.mayu, "-check", "-config", path).CombinedOutput()
		return string(out), err
	}
	if out, err := check("final-config.ign.yaml"); err != nil || !strings.Contains(out, "is valid") || strings.Contains(out, "Ignition warning") ||
		!strings.Contains(out, "cluster.templates.final_config: valid Ignition 3.3.0 for") {
		t.Fatalf("shipped example: %v\n%s", err, out)
	}
	out, err := check("bad.ign.yaml")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(out, "cluster.templates.final_config: invalid Ignition 3.3.0 config: $.storage.files.0.path: path not absolute") {
		t.Fatalf("bad template: %v\n%s", err, out)
	}
	if out, err := check("warn.ign.yaml"); err != nil || !strings.Contains(out, "is valid") ||
		!strings.Contains(out, "mayu: warning: cluster.templates.final_config: Ignition warning at $.storage.files.0.mode: setuid") {
		t.Fatalf("template with a warning: %v\n%s", err, out)
	}
}
