package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/replica"
	"github.com/mayu-boot/mayu/pkg/state"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Two replicas on one etcd, the same configuration, another OS image
// copied to the second by hand: with the first publishing as leader, the
// second is flagged (its /readyz names the file and both digests, the
// replicas view marks it), while the first is ready. Every replica
// answers the image with its digest as ETag, renders it into the first
// stage and records what a machine is installed with; an image changed
// on disk after start is refused, not served under the old digest.
func TestHandCopiedFilesAreCaught(t *testing.T) {
	etcd := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	images := [][]byte{[]byte(strings.Repeat("good image ", 50_000)), []byte(strings.Repeat("other image", 50_000))}
	var srv [2]*Server
	var cfgs [2]*config.Config
	for i, name := range []string{"r1", "r2"} {
		cfg := replicaConfig(t, "")
		cfg.Node.Name = name
		cfg.Node.Etcd.Endpoints = []string{etcd.ClientURL}
		cfg.Node.Etcd.Prefix = prefix
		if err := os.WriteFile(filepath.Join(cfg.Node.FilesDir, cfg.Cluster.Install.Image), images[i], 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Start(context.Background(), cfg, log, "test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		srv[i], cfgs[i] = s, cfg
	}
	if srv[0].replica.Self().ConfigHash == srv[1].replica.Self().ConfigHash {
		t.Fatal("replicas serving different images announce the same hash")
	}
	if got := srv[0].replica.Self().Files["cluster.install.image"]; got != sha(images[0]) {
		t.Fatalf("r1 announces image %s, want %s", got, sha(images[0]))
	}

	// r1 publishes what a leader publishes (loopback replicas run no
	// DHCP, so neither campaigns).
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	self := srv[0].replica.Self()
	pub, _ := json.Marshal(replica.Published{Hash: self.ConfigHash, Replica: "r1", Term: 1, Cluster: cfgs[0].Redacted(), Files: self.Files})
	if _, err := cli.Put(context.Background(), state.Keys{Prefix: prefix}.Config(), string(pub)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var code int
	var body string
	for {
		if code, body = get(t, "http://"+srv[1].Addrs["metrics"]+"/readyz"); code == 503 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"differs from the DHCP leader's", "files differ: cluster.install.image: own " + sha(images[1])[:12] + ", leader's " + sha(images[0])[:12]} {
		if code != 503 || !strings.Contains(body, want) {
			t.Fatalf("r2 /readyz: %d %q, want 503 saying %q", code, body, want)
		}
	}
	if strings.Contains(body, "cluster.install.kernel") {
		t.Errorf("r2 /readyz names a file that agrees: %q", body)
	}
	if code, body := get(t, "http://"+srv[0].Addrs["metrics"]+"/readyz"); code != 200 {
		t.Errorf("r1 /readyz: %d %q", code, body)
	}
	if _, body := get(t, "http://"+srv[1].Addrs["metrics"]+"/metrics"); !strings.Contains(body, `mayu_config_file_matches_leader{file="cluster.install.image"} 0`) ||
		!strings.Contains(body, `mayu_config_file_matches_leader{file="cluster.install.kernel"} 1`) {
		t.Errorf("r2's metrics do not flag the image:\n%s", grepLines(body, "file_matches"))
	}
	var view api.ReplicasView
	_, raw := get(t, "http://"+srv[0].Addrs["admin"]+"/api/v1/replicas", "Authorization", "Bearer 0123456789abcdef0123")
	if err := json.Unmarshal([]byte(raw), &view); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	for _, r := range view.Replicas {
		differ := strings.Join(r.FilesDiffer, ",")
		if r.Name == "r2" && (differ != "cluster.install.image" || r.ConfigMatches) || r.Name == "r1" && (differ != "" || !r.ConfigMatches) {
			t.Errorf("replicas view of %s: configMatches %v, filesDiffer %q", r.Name, r.ConfigMatches, differ)
		}
	}

	// The image's ETag is its digest, on each replica its own.
	for i, s := range srv {
		resp, err := http.Get("http://" + s.Addrs["http"] + "/boot/image")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if tag := resp.Header.Get("ETag"); tag != `"sha256:`+sha(images[i])+`"` {
			t.Errorf("r%d /boot/image ETag %s", i+1, tag)
		}
		req, _ := http.NewRequest("GET", "http://"+s.Addrs["http"]+"/boot/image", nil)
		req.Header.Set("If-None-Match", `"sha256:`+sha(images[i])+`"`)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
			t.Errorf("r%d If-None-Match: %v %v", i+1, resp.StatusCode, err)
		}
	}

	// So are the iPXE binaries over HTTP.
	resp, err := http.Get("http://" + srv[0].Addrs["http"] + "/tftp/ipxe.efi")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tag := resp.Header.Get("ETag"); tag != `"sha256:`+sha([]byte("efi"))+`"` {
		t.Errorf("/tftp/ipxe.efi ETag %s", tag)
	}

	// A machine installing from r1 gets r1's digest in its first stage
	// and keeps it in its record.
	base := "http://" + srv[0].Addrs["http"]
	_, script := get(t, base+"/ipxe?serial="+hex.EncodeToString([]byte("SN-ART"))+"&mac=52:54:00:00:08:01")
	tok := regexp.MustCompile(`mayu\.token=([0-9a-f]{64})`).FindStringSubmatch(script)
	if tok == nil {
		t.Fatalf("no token in\n%s", script)
	}
	code, fs := get(t, base+"/machines/sn-art/first-stage?token="+tok[1])
	if code != 200 || !strings.Contains(fs, "IMAGE_SHA256='"+sha(images[0])+"'") {
		t.Fatalf("first stage %d lacks the image digest:\n%s", code, fs)
	}
	var m machine.Machine
	_, raw = get(t, "http://"+srv[0].Addrs["admin"]+"/api/v1/machines/sn-art", "Authorization", "Bearer 0123456789abcdef0123")
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	kernel, _ := os.ReadFile(filepath.Join(cfgs[0].Node.FilesDir, cfgs[0].Cluster.Install.Kernel))
	if m.Artifacts["image"] != sha(images[0]) || m.Artifacts["kernel"] != sha(kernel) || len(m.Artifacts["initrd"]) != 64 {
		t.Errorf("the record keeps %v", m.Artifacts)
	}

	// The image changes on disk under r1: refused, never sent with the
	// digest of the bytes it had.
	if err := os.WriteFile(filepath.Join(cfgs[0].Node.FilesDir, cfgs[0].Cluster.Install.Image), []byte("new bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(base + "/boot/image")
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(msg), "changed on disk") || resp.Header.Get("ETag") != "" {
		t.Fatalf("changed image: %d %q ETag %q", resp.StatusCode, msg, resp.Header.Get("ETag"))
	}
	if _, body := get(t, "http://"+srv[0].Addrs["metrics"]+"/metrics"); !strings.Contains(body, `mayu_boot_file_changed_refused_total{file="cluster.install.image"} 1`) {
		t.Errorf("the refusal is not counted:\n%s", grepLines(body, "file_changed"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
