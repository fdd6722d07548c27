package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/replica"
	"github.com/mayu-boot/mayu/pkg/state"
)

// mayuctl replicas marks a replica serving another file than the leader
// and names the file with both digests; mayuctl status shows what a
// machine was installed with.
func TestReplicasAndStatusShowDigests(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	keys := state.Keys{Prefix: etcdtest.Prefix(t)}
	good, other := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	kernel := strings.Repeat("c3", 32)
	for _, i := range []replica.Info{
		{Name: "r1", Version: "v", Files: map[string]string{"cluster.install.image": good, "cluster.install.kernel": kernel}, Started: time.Now()},
		{Name: "r2", Version: "v", Files: map[string]string{"cluster.install.image": other, "cluster.install.kernel": kernel}, Started: time.Now()},
	} {
		i.ConfigHash = replica.ConfigHash("h", i.Files)
		data, _ := json.Marshal(i)
		if _, err := e.etc.Put(ctx, keys.Replica(i.Name), string(data)); err != nil {
			t.Fatal(err)
		}
	}
	pub, _ := json.Marshal(replica.Published{Hash: replica.ConfigHash("h", map[string]string{"cluster.install.image": good, "cluster.install.kernel": kernel}),
		Replica: "r1", Files: map[string]string{"cluster.install.image": good, "cluster.install.kernel": kernel}})
	if _, err := e.etc.Put(ctx, keys.Config(), string(pub)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.mayuctl("replicas")
	if code != 0 {
		t.Fatalf("replicas: exit %d\n%s%s", code, out, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "r2 ") != strings.Contains(line, "MISMATCH FILES-DIFFER") {
			t.Errorf("replicas row %q", line)
		}
	}
	want := "warning: r2 serves another cluster.install.image than the leader (sha256 " + other[:12] + ", the leader's " + good[:12] + ")"
	if !strings.Contains(errOut, want) || strings.Contains(errOut, "cluster.install.kernel") {
		t.Errorf("replicas stderr lacks %q:\n%s", want, errOut)
	}

	e.ok("add", "node-1")
	if _, err := e.reg.Update(ctx, "node-1", func(m *machine.Machine) error {
		if err := m.StartInstall("r1", time.Now()); err != nil {
			return err
		}
		m.SetArtifacts(map[string]string{machine.ArtifactImage: good, machine.ArtifactKernel: kernel})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out = e.ok("status", "node-1")
	for _, want := range []string{"Installed with:", "image  sha256:" + good, "kernel sha256:" + kernel} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
