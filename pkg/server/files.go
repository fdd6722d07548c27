package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/digest"
)

// hashFiles computes the SHA-256 of every local file the configuration
// names (not the artifacts, "artifact:NAME") and this replica serves: the installer files and templates
// (under files) and the iPXE binaries (under boot, when that directory
// exists and holds them). A missing installer file or template stops the
// start (a typo should stop mayu now, not every machine later); a missing
// iPXE binary is left out, and a replica that has it differs from one
// that has not.
func hashFiles(files, boot *os.Root, cl config.Cluster) (digest.Set, error) {
	set := digest.Set{}
	var problems []error
	for _, f := range []struct{ key, name string }{
		{"cluster.install.kernel", cl.Install.Kernel},
		{"cluster.install.initrd", cl.Install.Initrd},
		{"cluster.install.image", cl.Install.Image},
		{"cluster.templates.first_stage", cl.Templates.FirstStage},
		{"cluster.templates.final_config", cl.Templates.FinalConfig},
	} {
		if _, ok := config.ArtifactName(f.name); ok {
			continue // identified by its digest in the catalogue already
		}
		d, err := digest.Of(files, f.key, f.name)
		if err != nil {
			problems = append(problems, err) // every missing file named at once
			continue
		}
		set[f.key] = d
	}
	if boot == nil {
		if len(problems) > 0 {
			return nil, errors.Join(problems...)
		}
		return set, nil
	}
	for key, name := range bootFiles(cl.Boot) {
		if name == "" {
			continue
		}
		d, err := digest.Of(boot, key, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("%w (under node.boot_files_dir)", err))
			continue
		}
		set[key] = d
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return set, nil
}

// bootFiles are the iPXE binaries of cluster.boot, by key.
func bootFiles(b config.Boot) map[string]string {
	return map[string]string{
		"cluster.boot.bios": b.BIOS, "cluster.boot.efi64": b.EFI64,
		"cluster.boot.efi32": b.EFI32, "cluster.boot.arm64": b.ARM64,
	}
}
