package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// cluster is three nodes on one segment, each running an etcd member and
// a mayu replica, and a client host with a DHCP prober.
type cluster struct {
	t        *testing.T
	seg      *netlab.TSegment
	nodes    []string // namespaces
	addrs    []string // node addresses
	etcd     []*exec.Cmd
	etcdDirs []string
	replicas []*replica
	cli      string
}

// endpoints are the 3-member etcd's, as etcdctl takes them.
const endpoints = "http://10.99.0.2:2379,http://10.99.0.3:2379,http://10.99.0.4:2379"

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterWith(t, replicaOptions{})
}

// newClusterWith is newCluster with o's files, kernel arguments and extra
// cluster keys for every replica.
func newClusterWith(t *testing.T, o replicaOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, seg: netlab.NewSegmentT(t), addrs: []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"}}
	prefix := "/24"
	if o.wideSegment {
		prefix = "/16"
	}
	for i, a := range c.addrs {
		c.nodes = append(c.nodes, c.seg.AddHost(fmt.Sprintf("n%d", i+1), a+prefix))
		c.etcdDirs = append(c.etcdDirs, t.TempDir())
	}
	c.cli = c.seg.AddHost("cli", "10.99.0.250"+prefix)
	c.etcd = make([]*exec.Cmd, 3)
	for i := range c.nodes {
		c.startEtcd(i)
	}
	c.waitEtcd()
	for i, ns := range c.nodes {
		ro := o
		ro.name, ro.iface, ro.advertise, ro.etcd = fmt.Sprintf("r%d", i+1), "eth0", c.addrs[i], strings.Split(endpoints, ",")
		c.replicas = append(c.replicas, startReplica(t, c.seg.TLab, ns, ro))
	}
	return c
}

func (c *cluster) startEtcd(i int) {
	var peers []string
	for j, a := range c.addrs {
		peers = append(peers, fmt.Sprintf("e%d=http://%s:2380", j+1, a))
	}
	a := c.addrs[i]
	state := "new"
	if _, err := os.Stat(filepath.Join(c.etcdDirs[i], "member")); err == nil {
		state = "existing"
	}
	c.etcd[i], _ = c.seg.Start(c.nodes[i], bins.etcd,
		"--name", fmt.Sprintf("e%d", i+1), "--data-dir", c.etcdDirs[i],
		"--listen-client-urls", "http://"+a+":2379", "--advertise-client-urls", "http://"+a+":2379",
		"--listen-peer-urls", "http://"+a+":2380", "--initial-advertise-peer-urls", "http://"+a+":2380",
		"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", state,
		"--initial-cluster-token", "mayu-e2e", "--log-level", "error")
}

func (c *cluster) stopEtcd(i int) {
	c.etcd[i].Process.Signal(syscall.SIGKILL)
	c.etcd[i].Wait()
}

func (c *cluster) waitEtcd() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, err := c.seg.Run(10*time.Second, c.nodes[0], bins.etcdctl, "--endpoints", endpoints, "endpoint", "health")
		if err == nil && strings.Count(out, "is healthy") == 3 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatal("the etcd cluster did not become healthy")
}

// leader returns the index of the replica answering DHCP, waiting for one.
func (c *cluster) leader(within time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		found := -1
		for i, r := range c.replicas {
			if r.cmd.ProcessState != nil {
				continue
			}
			if out, err := c.seg.Run(5*time.Second, c.nodes[i], "curl", "-sf", "--max-time", "2", "http://127.0.0.1:4082/leader"); err == nil && strings.HasPrefix(out, "leader") {
				if found >= 0 {
					c.t.Fatalf("two replicas report DHCP leadership: r%d and r%d", found+1, i+1)
				}
				found = i
			}
		}
		if found >= 0 {
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatal("no replica leads DHCP")
	return -1
}

func (c *cluster) restartReplica(i int) {
	old := c.replicas[i]
	c.replicas[i] = &replica{lab: old.lab, ns: old.ns, dir: old.dir, config: old.config}
	c.replicas[i].cmd, c.replicas[i].log = c.seg.Start(old.ns, bins.mayu, "-config", old.config, "-log-level", "debug")
	c.replicas[i].waitLog(c.t, "mayu started", 30*time.Second)
}

// replicasUntil runs `mayuctl replicas` on replica i's node until ok
// accepts its output or within has passed, and returns the last output:
// a restarted replica's announcement may come after its first log lines.
func (c *cluster) replicasUntil(i int, within time.Duration, ok func(string) bool) string {
	deadline := time.Now().Add(within)
	for {
		out, _ := c.seg.Run(10*time.Second, c.nodes[i], "env", "MAYU_SERVER=http://127.0.0.1:4080", "MAYU_TOKEN_FILE="+filepath.Join(c.replicas[i].dir, "admin-token"),
			filepath.Join(filepath.Dir(bins.mayu), "mayuctl"), "replicas")
		if ok(out) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// prober runs dhcpprobe in the client namespace for the whole test.
type prober struct {
	cmd *exec.Cmd
	out string
}

func (c *cluster) startProber() *prober {
	out := filepath.Join(c.t.TempDir(), "probe.log")
	cmd, _ := c.seg.Start(c.cli, bins.dhcpprobe, "-i", "eth0", "-every", "50ms", "-timeout", "250ms", "-macs", "16", "-duration", "20m", "-out", out)
	return &prober{cmd: cmd, out: out}
}

func (p *prober) results(t *testing.T) []dhcpprobe.Result {
	t.Helper()
	f, err := os.Open(p.out)
	if os.IsNotExist(err) {
		return nil // the prober has not started writing yet
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := dhcpprobe.ParseLog(f)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// since returns the results of attempts started at or after t0.
func since(rs []dhcpprobe.Result, t0 time.Time) []dhcpprobe.Result {
	var out []dhcpprobe.Result
	for _, r := range rs {
		if !r.Start.Before(t0) {
			out = append(out, r)
		}
	}
	return out
}

// waitAnswered waits until the prober has an answer started after t0 from
// server (any server if empty), and returns the gap since t0.
func (c *cluster) waitAnswered(p *prober, t0 time.Time, server string, within time.Duration) time.Duration {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, r := range since(p.results(c.t), t0) {
			if r.OK && (server == "" || r.Server == server) {
				return r.End.Sub(t0)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no DHCP answer within %s after %s", within, t0.Format(time.TimeOnly))
	return 0
}

func TestThreeReplicasFailover(t *testing.T) {
	netlab.Require(t, "curl")
	c := newCluster(t)
	l := c.leader(30 * time.Second)
	t.Logf("r%d leads DHCP", l+1)
	p := c.startProber()
	c.waitAnswered(p, time.Now(), c.addrs[l], 10*time.Second)

	// kill -9: another replica answers after the session TTL.
	t0 := time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGKILL)
	c.replicas[l].cmd.Wait()
	gap := c.waitAnswered(p, t0, "", 30*time.Second)
	nl := c.leader(10 * time.Second)
	t.Logf("kill -9 of r%d: r%d answers after %s (TTL 3s)", l+1, nl+1, gap.Round(time.Millisecond))
	if gap > 15*time.Second {
		t.Errorf("failover after kill -9 took %s", gap)
	}
	c.restartReplica(l)

	// SIGTERM: the leader resigns; no waiting for the TTL.
	l = c.leader(10 * time.Second)
	time.Sleep(time.Second)
	t0 = time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGTERM)
	c.replicas[l].cmd.Wait()
	gap = c.waitAnswered(p, t0, "", 30*time.Second)
	nl = c.leader(10 * time.Second)
	t.Logf("SIGTERM of r%d: r%d answers after %s", l+1, nl+1, gap.Round(time.Millisecond))
	if gap > 3*time.Second {
		t.Errorf("failover after SIGTERM took %s: the leader did not resign", gap)
	}
	c.restartReplica(l)

	// A leader frozen longer than the TTL is replaced, and once thawed it
	// can neither write a lease nor ACK one.
	l = c.leader(10 * time.Second)
	time.Sleep(time.Second)
	t0 = time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGSTOP)
	gap = c.waitAnswered(p, t0, "", 30*time.Second)
	nl = c.leader(10 * time.Second)
	t.Logf("SIGSTOP of r%d: r%d answers after %s", l+1, nl+1, gap.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	thaw := time.Now()
	c.replicas[l].cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(3 * time.Second)
	for _, r := range since(p.results(t), thaw) {
		if r.OK && r.Server == c.addrs[l] {
			t.Errorf("the thawed, deposed leader r%d acknowledged %s to %s", l+1, r.IP, r.MAC)
		}
	}
	if !strings.Contains(c.replicas[l].log.String(), "lost DHCP leadership") {
		t.Errorf("r%d did not notice it lost leadership", l+1)
	}

	// One etcd member down: nothing changes.
	l = c.leader(10 * time.Second)
	down := (l + 1) % 3
	t0 = time.Now()
	c.stopEtcd(down)
	time.Sleep(5 * time.Second)
	rs := since(p.results(t), t0)
	if g := dhcpprobe.LongestGap(rs); g > 3*time.Second {
		t.Errorf("with one etcd member down DHCP paused for %s", g)
	}
	t.Logf("etcd member e%d down: longest DHCP gap %s", down+1, dhcpprobe.LongestGap(rs).Round(time.Millisecond))

	// Two down: no quorum. DHCP goes silent (fail safe), files are still
	// served by every replica.
	down2 := (down + 1) % 3
	t0 = time.Now()
	c.stopEtcd(down2)
	time.Sleep(12 * time.Second)
	recent := since(p.results(t), time.Now().Add(-3*time.Second))
	for _, r := range recent {
		if r.OK {
			t.Errorf("DHCP answered without etcd quorum: %s to %s by %s", r.IP, r.MAC, r.Server)
			break
		}
	}
	if len(recent) == 0 {
		t.Error("the prober stopped probing")
	}
	for i, a := range c.addrs {
		if c.replicas[i].cmd.ProcessState != nil {
			continue
		}
		out, err := c.seg.Run(10*time.Second, c.cli, "curl", "-sf", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+a+":4081/boot/kernel")
		if err != nil || out != "200" {
			t.Errorf("r%d did not serve /boot/kernel without etcd quorum: %v %s", i+1, err, out)
		}
		tf := filepath.Join(t.TempDir(), "undionly.kpxe")
		if out, err := c.seg.Run(10*time.Second, c.cli, "curl", "-sS", "--max-time", "5", "-o", tf, "tftp://"+a+"/undionly.kpxe"); err != nil {
			t.Errorf("r%d did not serve TFTP without etcd quorum: %v %s", i+1, err, out)
		}
	}
	t.Logf("etcd members e%d and e%d down: DHCP silent, HTTP and TFTP still served", down+1, down2+1)

	// Quorum back: DHCP resumes.
	t0 = time.Now()
	c.startEtcd(down)
	c.startEtcd(down2)
	gap = c.waitAnswered(p, t0, "", 60*time.Second)
	t.Logf("etcd quorum back: DHCP answers again after %s", gap.Round(time.Millisecond))

	// After all of it: no address was ever handed to two clients, each
	// client kept its address, and every ACK is durable in etcd.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	all := p.results(t)
	if err := dhcpprobe.CheckUnique(all); err != nil {
		t.Error(err)
	}
	if err := dhcpprobe.CheckStable(all); err != nil {
		t.Error(err)
	}
	out, err := c.seg.Run(20*time.Second, c.nodes[0], bins.etcdctl, "--endpoints", endpoints,
		"get", "--prefix", "/mayu/leases/", "--print-value-only")
	if err != nil {
		t.Fatal(err, out)
	}
	durable := map[string]string{} // ip → mac
	for _, line := range strings.Split(out, "\n") {
		var lv leaseValue
		if strings.TrimSpace(line) == "" || json.Unmarshal([]byte(line), &lv) != nil {
			continue
		}
		durable[lv.IP] = lv.MAC
	}
	ok := 0
	for _, r := range all {
		if !r.OK {
			continue
		}
		ok++
		if durable[r.IP] != r.MAC {
			t.Errorf("ACK of %s to %s is not in etcd (etcd has %q)", r.IP, r.MAC, durable[r.IP])
			break
		}
	}
	t.Logf("%d probes, %d answered, %d leases in etcd, all unique", len(all), ok, len(durable))
}

// A replica whose cluster configuration differs from the leader's does not
// campaign and says so; a rolling change (followers first, then the
// leader) costs no DHCP gap beyond a resignation.
func TestRollingConfigChange(t *testing.T) {
	netlab.Require(t, "curl")
	c := newCluster(t)
	l := c.leader(30 * time.Second)
	p := c.startProber()
	c.waitAnswered(p, time.Now(), "", 10*time.Second)

	change := func(i int) {
		r := c.replicas[i]
		data, err := os.ReadFile(r.config)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, r.config, []byte(strings.Replace(string(data), "lease_time: 10m", "lease_time: 20m", 1)))
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		c.restartReplica(i)
	}
	var followers []int
	for i := range c.replicas {
		if i != l {
			followers = append(followers, i)
		}
	}
	for _, i := range followers {
		change(i)
		c.replicas[i].waitLog(t, "CONFIG MISMATCH", 20*time.Second)
		out, _ := c.seg.Run(5*time.Second, c.nodes[i], "curl", "-s", "--max-time", "2", "http://127.0.0.1:4082/readyz")
		if !strings.Contains(out, "differs from the DHCP leader") {
			t.Errorf("r%d /readyz while mismatched: %q", i+1, out)
		}
	}
	flagged := func(out string) bool { return strings.Count(out, "MISMATCH") == 2 && strings.Contains(out, "leader") }
	out := c.replicasUntil(l, 20*time.Second, flagged)
	t.Logf("mayuctl replicas during the change:\n%s", out)
	if !flagged(out) {
		t.Errorf("mayuctl replicas does not show the two mismatched followers:\n%s", out)
	}
	if got := c.leader(5 * time.Second); got != l {
		t.Fatalf("a mismatched follower r%d took over", got+1)
	}

	// Now the leader: it resigns, an updated follower takes over at once.
	t0 := time.Now()
	change(l)
	gap := c.waitAnswered(p, t0, "", 30*time.Second)
	nl := c.leader(10 * time.Second)
	t.Logf("rolling change: r%d took over from r%d after %s", nl+1, l+1, gap.Round(time.Millisecond))
	if nl == l || gap > 3*time.Second {
		t.Errorf("after the leader's restart r%d leads, gap %s", nl+1, gap)
	}
	for i := range c.replicas {
		out, _ := c.seg.Run(5*time.Second, c.nodes[i], "curl", "-s", "--max-time", "2", "http://127.0.0.1:4082/readyz")
		if !strings.HasPrefix(out, "ready") {
			t.Errorf("r%d not ready after the change: %q", i+1, out)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	if err := dhcpprobe.CheckUnique(p.results(t)); err != nil {
		t.Error(err)
	}
}

// A follower given another OS image by hand (same configuration) is
// flagged as loudly as a configuration mismatch: it logs CONFIG MISMATCH,
// fails /readyz naming the file and both digests, is marked in `mayuctl
// replicas`, and does not take over; with the leader's image back, it is
// ready again.
func TestReplicaWithAnotherImageIsFlagged(t *testing.T) {
	netlab.Require(t, "curl")
	c := newCluster(t)
	l := c.leader(30 * time.Second)
	f := (l + 1) % len(c.replicas)
	img := filepath.Join(c.replicas[f].dir, "files", "images", "os.img")
	good, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	other := append(bytes.Clone(good), " copied by hand"...)
	restart := func(image []byte) {
		writeFile(t, img, image)
		c.replicas[f].cmd.Process.Signal(syscall.SIGTERM)
		c.replicas[f].cmd.Wait()
		c.restartReplica(f)
	}
	restart(other)
	c.replicas[f].waitLog(t, "CONFIG MISMATCH", 20*time.Second)
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:])[:12] }
	out, _ := c.seg.Run(5*time.Second, c.nodes[f], "curl", "-s", "--max-time", "2", "http://127.0.0.1:4082/readyz")
	if want := "cluster.install.image: own " + sum(other) + ", leader's " + sum(good); !strings.Contains(out, want) {
		t.Errorf("r%d /readyz %q does not say %q", f+1, out, want)
	}
	flagged := func(out string) bool {
		return strings.Count(out, "FILES-DIFFER") == 1 && strings.Contains(out, fmt.Sprintf("r%d serves another cluster.install.image than the leader", f+1))
	}
	out = c.replicasUntil(l, 20*time.Second, flagged)
	t.Logf("mayuctl replicas:\n%s", out)
	if !flagged(out) {
		t.Errorf("mayuctl replicas does not flag r%d:\n%s", f+1, out)
	}
	out, _ = c.seg.Run(5*time.Second, c.nodes[f], "curl", "-s", "--max-time", "2", "http://127.0.0.1:4082/metrics")
	if !strings.Contains(out, `mayu_config_file_matches_leader{file="cluster.install.image"} 0`) {
		t.Errorf("r%d's metrics do not flag the image", f+1)
	}
	if got := c.leader(5 * time.Second); got != l {
		t.Fatalf("r%d took over with another image", got+1)
	}

	restart(good)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := c.seg.Run(5*time.Second, c.nodes[f], "curl", "-s", "--max-time", "2", "http://127.0.0.1:4082/readyz")
		if strings.HasPrefix(out, "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r%d not ready with the leader's image back: %q", f+1, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
