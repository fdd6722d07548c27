package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/state"
)

// The tests of docs/operations.md: a backup restored into a fresh etcd,
// and the embedded etcd moved to a 3-member cluster, each step as the
// guide tells an operator to take it, with the real etcd, etcdctl and
// etcdutl binaries (`make etcd`).

const adminToken = "0123456789abcdef0123" // replicaConfig's

// fleet is what an operator must find again after a restore: one machine
// installed, one registered with the token its iPXE got, one DHCP lease.
type fleet struct {
	installedToken  string // sn-inst's, minted before the backup
	configuredToken string // sn-conf's
	lease           netip.Addr
}

var nodeTokenRe = regexp.MustCompile(`mayu\.token=([0-9a-f]{64})`)

// register asks /ipxe as the machine's iPXE does and returns its token.
func register(t *testing.T, httpURL, serial, mac string) string {
	t.Helper()
	_, body := get(t, httpURL+"/ipxe?serial="+hex.EncodeToString([]byte(serial))+"&mac="+mac)
	m := nodeTokenRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s: no installer script:\n%s", serial, body)
	}
	return m[1]
}

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// makeFleet installs sn-inst, registers sn-conf and writes a lease as the
// DHCP leader does, through the replica at httpURL and etcd at cli.
func makeFleet(t *testing.T, httpURL string, cli *clientv3.Client, prefix string) fleet {
	t.Helper()
	f := fleet{
		installedToken:  register(t, httpURL, "SN-INST", "52:54:00:00:15:01"),
		configuredToken: register(t, httpURL, "SN-CONF", "52:54:00:00:15:02"),
		lease:           netip.MustParseAddr("10.99.0.150"),
	}
	if code, body := get(t, httpURL+"/machines/sn-inst/first-stage?token="+f.installedToken); code != 200 {
		t.Fatalf("first stage: %d %s", code, body)
	}
	if code, body := post(t, httpURL+"/machines/sn-inst/installed?token="+f.installedToken); code != 200 {
		t.Fatalf("installed: %d %s", code, body)
	}
	op, err := lease.NewStore(cli, state.Keys{Prefix: prefix}, 0).PutOp(lease.Lease{
		IP: f.lease, MAC: "52:54:00:00:15:01", Expiry: time.Now().Add(time.Hour).UTC(), Leader: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Txn(context.Background()).Then(op).Commit(); err != nil {
		t.Fatal(err)
	}
	return f
}

// durable is every key under prefix that outlives the replicas: those
// without an etcd lease (election and announcements expire with their
// sessions); at revision rev if not 0.
func durable(t *testing.T, cli *clientv3.Client, prefix string, rev ...int64) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if len(rev) > 0 {
		opts = append(opts, clientv3.WithRev(rev[0]))
	}
	resp, err := cli.Get(ctx, prefix, opts...)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, x := range resp.Kvs {
		if x.Lease == 0 {
			kv[string(x.Key)] = string(x.Value)
		}
	}
	return kv
}

func sameState(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %q before, %q after", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: new after the restore", k)
		}
	}
	for _, k := range []string{"machines/sn-inst", "machines/sn-conf", "leases/10.99.0.150", "secret"} {
		found := false
		for key := range before {
			if strings.Contains(key, k) {
				found = true
			}
		}
		if !found {
			t.Errorf("no key with %q in the state backed up: the test proves less than it says", k)
		}
	}
}

// snapshotSave backs the etcd at endpoint up into a new file with
// `etcdctl snapshot save`, as docs/operations.md says, and returns the
// file and the revision it holds (`etcdutl snapshot status`): the
// replicas go on writing while it runs.
func snapshotSave(t *testing.T, endpoint string) (string, int64) {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "mayu-backup.db")
	if out, err := exec.Command(etcdtest.Binary(t, "etcdctl"), "--endpoints", endpoint,
		"snapshot", "save", snap).CombinedOutput(); err != nil {
		t.Fatalf("etcdctl snapshot save: %v\n%s", err, out)
	}
	out, err := exec.Command(etcdtest.Binary(t, "etcdutl"), "snapshot", "status", snap, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v\n%s", err, out)
	}
	var status struct{ Revision int64 }
	if err := json.Unmarshal(out, &status); err != nil || status.Revision == 0 {
		t.Fatalf("etcdutl snapshot status: %v: %s", err, out)
	}
	return snap, status.Revision
}

// startReplica starts a replica named name on the etcd at endpoints.
func startReplica(t *testing.T, name string, endpoints []string, prefix string) *Server {
	t.Helper()
	cfg := replicaConfig(t, "")
	cfg.Node.Name = name
	cfg.Node.Etcd.Endpoints = endpoints
	cfg.Node.Etcd.Prefix = prefix
	return startWith(t, cfg)
}

func startWith(t *testing.T, cfg *config.Config) *Server {
	t.Helper()
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// serves checks that the replica s serves fleet f as it was: the
// installed machine is installed (its iPXE gets a local boot, its token
// still reports boot-complete, if bootComplete), the registered one still
// installs with the token it got before, the lease is listed.
func serves(t *testing.T, s *Server, f fleet, bootComplete bool) {
	t.Helper()
	httpURL, adminURL := "http://"+s.Addrs["http"], "http://"+s.Addrs["admin"]
	_, body := get(t, adminURL+"/api/v1/machines", "Authorization", "Bearer "+adminToken)
	var list api.MachineList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("list: %v\n%s", err, body)
	}
	states := map[string]machine.State{}
	for _, m := range list.Machines {
		states[m.ID] = m.State
	}
	// sn-conf is installing once a replica served its first stage (an
	// earlier call of serves).
	conf := states["sn-conf"]
	if states["sn-inst"] != machine.Installed || (conf != machine.Configured && conf != machine.Installing) || len(states) != 2 {
		t.Errorf("machines after the restore: %v", states)
	}
	_, body = get(t, httpURL+"/ipxe?serial="+hex.EncodeToString([]byte("SN-INST"))+"&mac=52:54:00:00:15:01")
	if !strings.Contains(body, "booting from the local disk") {
		t.Errorf("the installed machine's iPXE is not sent to its disk:\n%s", body)
	}
	if code, body := get(t, httpURL+"/machines/sn-conf/first-stage?token="+f.configuredToken); code != 200 {
		t.Errorf("a token minted before the backup: %d %s", code, body)
	}
	if bootComplete {
		if code, body := post(t, httpURL+"/machines/sn-inst/boot-complete?token="+f.installedToken); code != 200 {
			t.Errorf("boot-complete with the token of before the backup: %d %s", code, body)
		}
	}
	_, body = get(t, adminURL+"/api/v1/leases", "Authorization", "Bearer "+adminToken)
	if !strings.Contains(body, f.lease.String()) {
		t.Errorf("the lease is gone:\n%s", body)
	}
}

// docs/operations.md "Backup and restore": `etcdctl snapshot save` from
// the running etcd, `etcdutl snapshot restore` into a fresh data
// directory, a fresh etcd on it: every machine, installed flag, lease and
// the cluster secret are back, and a replica on it goes on where the
// other stopped.
func TestBackupAndRestore(t *testing.T) {
	etcd := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	s1 := startReplica(t, "r1", []string{etcd.ClientURL}, prefix)
	f := makeFleet(t, "http://"+s1.Addrs["http"], etcd.Client, prefix)

	// The backup, taken while the replica runs (a snapshot is one
	// consistent revision).
	snap, rev := snapshotSave(t, etcd.ClientURL)
	before := durable(t, etcd.Client, prefix, rev)
	s1.Close()
	etcd.Stop() // the etcd is lost

	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{Members: 1, Snapshot: snap})
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sameState(t, before, durable(t, cli, prefix))
	serves(t, startReplica(t, "r2", c.Endpoints, prefix), f, true)
}

// docs/operations.md "From the embedded etcd to a cluster": stop the
// replica, restore its embedded etcd's database into each member of a new
// 3-member cluster, point the replicas at it: nothing is lost, and every
// replica serves the machines.
func TestMoveTheEmbeddedEtcdToACluster(t *testing.T) {
	cfg := replicaConfig(t, "")
	cfg.Node.Name = "r1"
	if len(cfg.Node.Etcd.Endpoints) != 0 {
		t.Fatal("the replica must run the embedded etcd")
	}
	s1 := startWith(t, cfg)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.Node.Etcd.Embedded.ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := cfg.Node.Etcd.Prefix
	f := makeFleet(t, "http://"+s1.Addrs["http"], cli, prefix)
	before := durable(t, cli, prefix)

	// 1. systemctl stop mayu: a clean stop commits everything to the
	// database file.
	s1.Close()
	// 2. Copy <data_dir>/etcd/member/snap/db off the replica.
	db := filepath.Join(t.TempDir(), "embedded.db")
	b, err := os.ReadFile(filepath.Join(cfg.Node.DataDir, "etcd", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// 3. On each member: etcdutl snapshot restore db --skip-hash-check
	// with the new cluster's members, then start etcd.
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{Snapshot: db, SkipHashCheck: true})
	cli3, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli3.Close()
	sameState(t, before, durable(t, cli3, prefix))

	// 4. node.etcd.endpoints on every replica, start them: the old one
	// and a new one both serve the machines.
	cfg.Node.Etcd.Endpoints = c.Endpoints
	serves(t, startWith(t, cfg), f, false)
	serves(t, startReplica(t, "r2", c.Endpoints, prefix), f, true)
}

// docs/operations.md "Backup and restore", one replica on its embedded
// etcd: the snapshot restored into node.data_dir/etcd with etcdutl, under
// the replica's node.name and embedded peer URL, and mayu started again.
func TestRestoreTheEmbeddedEtcd(t *testing.T) {
	cfg := replicaConfig(t, "")
	cfg.Node.Name = "r1"
	s1 := startWith(t, cfg)
	embedded := cfg.Node.Etcd.Embedded
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{embedded.ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := cfg.Node.Etcd.Prefix
	f := makeFleet(t, "http://"+s1.Addrs["http"], cli, prefix)
	snap, rev := snapshotSave(t, embedded.ClientURL)
	before := durable(t, cli, prefix, rev)
	s1.Close()
	cli.Close()

	// The data directory is lost; the snapshot goes back in its place.
	dir := filepath.Join(cfg.Node.DataDir, "etcd")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(etcdtest.Binary(t, "etcdutl"), "snapshot", "restore", snap,
		"--data-dir", dir, "--name", cfg.Node.Name,
		"--initial-cluster", cfg.Node.Name+"="+embedded.PeerURL,
		"--initial-advertise-peer-urls", embedded.PeerURL).CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore: %v\n%s", err, out)
	}
	s2 := startWith(t, cfg)
	cli2, err := clientv3.New(clientv3.Config{Endpoints: []string{embedded.ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	sameState(t, before, durable(t, cli2, prefix))
	serves(t, s2, f, true)
}
