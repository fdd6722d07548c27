// Package e2e runs the real mayu binary inside network namespaces and
// talks to it with real clients: udhcpc, perfdhcp, curl, atftp.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// bins holds the binaries the tests run, built once.
var bins struct {
	dir       string
	mayu      string
	etcd      string
	etcdctl   string
	dhcpprobe string
	upstream  string
	mayuctl   string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mayu-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		if os.Geteuid() != 0 {
			return m.Run() // every test skips
		}
		bins.mayu = filepath.Join(dir, "mayu")
		if out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/mayu", "../cmd/mayuctl").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build mayu: %v\n%s", err, out)
			return 1
		}
		bins.mayuctl = filepath.Join(dir, "mayuctl")
		bins.upstream = filepath.Join(dir, "upstream")
		if out, err := exec.Command("go", "build", "-o", bins.upstream, "../internal/cmd/upstream").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build upstream: %v\n%s", err, out)
			return 1
		}
		bins.dhcpprobe = filepath.Join(dir, "dhcpprobe")
		if out, err := exec.Command("go", "build", "-o", bins.dhcpprobe, "../internal/cmd/dhcpprobe").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build dhcpprobe: %v\n%s", err, out)
			return 1
		}
		// make test builds etcd and etcdctl into bin/; build them here otherwise.
		for _, b := range []struct {
			path *string
			name string
			pkg  string
		}{{&bins.etcd, "etcd", "go.etcd.io/etcd/server/v3"}, {&bins.etcdctl, "etcdctl", "go.etcd.io/etcd/etcdctl/v3"}} {
			*b.path, _ = filepath.Abs("../bin/" + b.name)
			if _, err := os.Stat(*b.path); err == nil {
				continue
			}
			*b.path = filepath.Join(dir, b.name)
			if out, err := exec.Command("go", "build", "-o", *b.path, b.pkg).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.name, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// replica is one mayu process in a lab namespace.
type replica struct {
	lab    *netlab.TLab
	ns     string
	dir    string
	cmd    *exec.Cmd
	log    *netlab.Output
	config string
}

// replicaOptions shape a replica's config (package internal/fixture).
type replicaOptions struct {
	name       string
	iface      string   // default srv0
	advertise  string   // default 10.99.0.1
	etcd       []string // external endpoints; none = embedded
	extra      string   // more cluster keys
	vars       map[string]string
	answerIPXE bool
	files      string // installer/vmlinuz, installer/initrd.img, images/os.img to serve (vm_test.go); empty: stand-ins
	kernelArgs string // cluster.install.kernel_args
	image      string // cluster.install.image; default images/os.img
	nodeExtra  string // more node keys, indented by two spaces
	// wideSegment: the segment is 10.99.0.0/16 with a pool of several
	// hundred addresses (fixture.Config.WideSegment).
	wideSegment bool
	// ignition: the shipped Ignition final config (vm_test.go: the OS
	// runs the real Ignition on it).
	ignition bool
	// proxy: every pool in proxy mode (fixture.Config.Proxy).
	proxy bool
}

// startReplica writes a files directory, boot files and a config, and
// starts mayu in ns on srv0.
func startReplica(t *testing.T, lab *netlab.TLab, ns string, o replicaOptions) *replica {
	t.Helper()
	dir := t.TempDir()
	if _, err := os.Stat(fixture.IPXEFiles[0]); err != nil {
		t.Skipf("iPXE binaries missing (package ipxe): %v", err)
	}
	if err := fixture.WriteFiles(dir, fixture.Files{Installer: o.files, IPXE: true, Token: "e2e-admin-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	if o.iface == "" {
		o.iface = "srv0"
	}
	path, err := fixture.Config{Dir: dir, Name: o.name, Interface: o.iface, Advertise: o.advertise, Etcd: o.etcd,
		ElectionTTL: "3s", LeaseTime: "10m", RelayPool: true, KernelArgs: o.kernelArgs, TemplateVars: o.vars,
		AnswerInstalledIPXE: o.answerIPXE, Extra: o.extra, Image: o.image, NodeExtra: o.nodeExtra,
		WideSegment: o.wideSegment, IgnitionFinalConfig: o.ignition, Proxy: o.proxy}.Write()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{lab: lab, ns: ns, dir: dir, config: path}
	r.cmd, r.log = lab.Start(ns, bins.mayu, "-config", path, "-log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mayu %s log:\n%s", o.name, tail(r.log.String(), 60))
		}
	})
	return r
}

// waitLog waits until the replica's log contains s.
func (r *replica) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(r.log.String(), s) {
			return
		}
		if r.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("mayu never logged %q:\n%s", s, tail(r.log.String(), 40))
}

// etcdctl runs etcdctl in the replica's namespace against its etcd.
func (r *replica) etcdctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.lab.Run(20*time.Second, r.ns, bins.etcdctl, append([]string{"--endpoints", "http://127.0.0.1:2379"}, args...)...)
	if err != nil {
		t.Fatalf("etcdctl %v: %v\n%s", args, err, out)
	}
	return out
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// curl runs curl in the client namespace.
func curl(t *testing.T, lab *netlab.TLab, args ...string) (string, error) {
	t.Helper()
	return lab.Run(30*time.Second, lab.Cli, "curl", append([]string{"-sS", "--max-time", "20"}, args...)...)
}
