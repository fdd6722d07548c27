// Command oci builds mayu's OCI image without a container daemon: one
// layer per architecture with the static binaries, the packaged
// /etc/mayu/mayu.yaml and the templates under /srv/mayu/files/templates
// (where that configuration's node.files_dir is), an image index over the architectures, written as an OCI image
// layout directory and as a tar of that directory (an "oci-archive" that
// skopeo, podman and docker load).
//
// scripts/release.sh runs it (`make release`); it is a module of its own so
// that go-containerregistry stays out of mayu's go.mod.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "oci:", err)
		os.Exit(1)
	}
}

type options struct {
	version, source string
	arches          []string
	binaries        string // fmt pattern: program, arch
	config          string // mayu.yaml: the Debian package's (files under /srv/mayu)
	templates       string // directory of the shipped templates
	// caFile is the CA bundle for HTTPS artifact upstreams, copied from the
	// build host (Debian's ca-certificates): the image's bytes, and so its
	// digest, depend on the version installed there. A release records it
	// (README "Installing from a release"); "" leaves the bundle out.
	caFile    string
	caVersion string // where the bundle came from, e.g. "ca-certificates 20230311"
	layoutDir string
	archive   string
	epoch     time.Time
}

func run(args []string) error {
	fl := flag.NewFlagSet("oci", flag.ContinueOnError)
	var o options
	var arches string
	var epoch int64
	fl.StringVar(&o.version, "version", "", "release version (image label and reference name)")
	fl.StringVar(&o.source, "source", "https://github.com/mayu-boot/mayu", "source repository label")
	fl.StringVar(&arches, "arch", "amd64", "comma-separated GOARCH values")
	fl.StringVar(&o.binaries, "binaries", "dist/%s-linux-%s", "path of each binary: a fmt pattern of program and arch")
	fl.StringVar(&o.config, "config", "etc/mayu.yaml", "mayu.yaml the image carries as /etc/mayu/mayu.yaml")
	fl.StringVar(&o.templates, "templates", "etc/templates", "directory of the templates the image carries in /srv/mayu/files/templates")
	fl.StringVar(&o.caFile, "ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied to the image (artifact upstreams over HTTPS); empty: none")
	fl.StringVar(&o.caVersion, "ca-version", "", "origin of the CA bundle (label org.mayu-boot.ca-certificates); empty: no label")
	fl.StringVar(&o.layoutDir, "layout", "dist/oci", "OCI image layout directory to write (replaced)")
	fl.StringVar(&o.archive, "archive", "", "tar of the layout to write (oci-archive); empty: none")
	fl.Int64Var(&epoch, "epoch", 0, "timestamp of every file and of the image, in Unix seconds (SOURCE_DATE_EPOCH)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.version == "" {
		return errors.New("-version is required")
	}
	o.arches = strings.Split(arches, ",")
	o.epoch = time.Unix(epoch, 0).UTC()
	return build(o)
}

func build(o options) error {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range o.arches {
		img, err := image(o, arch)
		if err != nil {
			return fmt.Errorf("%s: %w", arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	if err := os.RemoveAll(o.layoutDir); err != nil {
		return err
	}
	p, err := layout.Write(o.layoutDir, empty.Index)
	if err != nil {
		return err
	}
	// The reference name lets `skopeo inspect oci:DIR:VERSION` and
	// `umoci unpack --image DIR:VERSION` find the index.
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.version,
	})); err != nil {
		return err
	}
	if o.archive == "" {
		return nil
	}
	return tarDir(o.layoutDir, o.archive, o.epoch)
}

// image is mayu for one architecture: a single layer, run as root inside
// the container because answering DHCP needs ports 67 and 69 and raw
// sockets (CAP_NET_BIND_SERVICE, CAP_NET_RAW), which a runtime grants a
// non-root user only through ambient capabilities most do not set.
func image(o options, arch string) (v1.Image, error) {
	var files []file
	for _, d := range []string{"etc/", "etc/mayu/", "usr/", "usr/bin/",
		"srv/", "srv/mayu/", "srv/mayu/files/", "srv/mayu/files/templates/", "srv/mayu/boot/",
		"var/", "var/lib/", "var/lib/mayu/", "tmp/"} {
		mode := int64(0o755)
		switch d {
		case "var/lib/mayu/":
			mode = 0o700 // the embedded etcd's data: the secret that signs node tokens
		case "tmp/":
			mode = 0o1777
		}
		files = append(files, file{name: d, mode: mode})
	}
	for _, prog := range []string{"mayu", "mayuctl"} {
		b, err := os.ReadFile(fmt.Sprintf(o.binaries, prog, arch))
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: "usr/bin/" + prog, mode: 0o755, data: b})
	}
	b, err := os.ReadFile(o.config)
	if err != nil {
		return nil, err
	}
	files = append(files, file{name: "etc/mayu/mayu.yaml", mode: 0o644, data: b})
	templates, err := os.ReadDir(o.templates)
	if err != nil {
		return nil, err
	}
	for _, t := range templates {
		b, err := os.ReadFile(filepath.Join(o.templates, t.Name()))
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: "srv/mayu/files/templates/" + t.Name(), mode: 0o644, data: b})
	}
	if o.caFile != "" {
		b, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("CA bundle (-ca-certificates): %w", err)
		}
		files = append(files,
			file{name: "etc/ssl/", mode: 0o755}, file{name: "etc/ssl/certs/", mode: 0o755},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: b})
	}
	layerTar, err := tarFiles(files, o.epoch)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: o.epoch}
	cf.Config = v1.Config{
		Entrypoint: []string{"/usr/bin/mayu"},
		Cmd:        []string{"-config", "/etc/mayu/mayu.yaml"},
		User:       "0:0",
		WorkingDir: "/var/lib/mayu",
		Env:        []string{"PATH=/usr/bin"},
		// The ports of etc/mayu.yaml; DHCP needs host networking anyway
		// (broadcasts on the boot segment).
		ExposedPorts: map[string]struct{}{
			"67/udp": {}, "69/udp": {}, "4080/tcp": {}, "4081/tcp": {}, "4082/tcp": {},
		},
		Volumes: map[string]struct{}{"/var/lib/mayu": {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "mayu",
			"org.opencontainers.image.description": "highly available network-boot provisioning service",
			"org.opencontainers.image.version":     o.version,
			"org.opencontainers.image.source":      o.source,
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.created":     o.epoch.Format(time.RFC3339),
		},
	}
	if o.caFile != "" && o.caVersion != "" {
		cf.Config.Labels["org.mayu-boot.ca-certificates"] = o.caVersion
	}
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name string // slash-separated, relative; a directory ends in "/"
	mode int64
	data []byte
}

// tarFiles writes files as a tar owned by root, every time stamp the
// release's, so the same sources give the same layer digest.
func tarFiles(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Format: tar.FormatPAX}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the layout directory as a tar with its entries at the top
// (oci-layout, index.json, blobs/…), the oci-archive format.
func tarDir(dir, out string, mtime time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	var files []file
	for _, p := range names {
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			files = append(files, file{name: rel + "/", mode: 0o755})
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, file{name: rel, mode: 0o644, data: b})
	}
	b, err := tarFiles(files, mtime)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
