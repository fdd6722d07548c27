package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// The keepalived test's segment: three replica nodes, an etcd host and a
// client. The client is not at 10.99.0.250 here (as in newCluster): that
// is the virtual address.
const (
	kaVIP     = "10.99.0.250"
	kaEtcd    = "10.99.0.10"
	kaCli     = "10.99.0.200"
	kaImageMB = 4 // at 16 Mbit/s: about 2 s each
)

var kaAddrs = []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"}

// kaNode is one replica machine: mayu and keepalived in one namespace.
type kaNode struct {
	name    string
	ns      string
	replica *replica
	kaLog   *netlab.Output
}

// kaFetch is one HTTP request through the VIP.
type kaFetch struct {
	start, end time.Time
	connected  time.Time // zero if it never connected
	ok         bool
	out        string // curl's error, if any
}

// kaLoop fetches one URL through the VIP from the client, one request
// after the other, until stopped, and keeps every outcome.
type kaLoop struct {
	name   string
	mu     sync.Mutex
	all    []kaFetch
	cancel context.CancelFunc
	done   chan struct{}
}

// kaStartLoop runs curl args... in ns in a loop, pausing pause after each
// request; a request succeeds with 200 and want bytes.
func kaStartLoop(seg *netlab.TSegment, ns, name string, want int, pause time.Duration, args ...string) *kaLoop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &kaLoop{name: name, cancel: cancel, done: make(chan struct{})}
	args = append([]string{"-sS", "-o", "/dev/null", "-w", "\n%{http_code} %{size_download} %{time_connect}"}, args...)
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			f := kaFetch{start: time.Now()}
			out, err := seg.Command(ctx, ns, "curl", args...).CombinedOutput()
			f.end = time.Now()
			if ctx.Err() != nil {
				return // cut short by stop: not a result
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			var code, size int
			var connect float64
			if _, err := fmt.Sscan(lines[len(lines)-1], &code, &size, &connect); err == nil && connect > 0 {
				f.connected = f.start.Add(time.Duration(connect * float64(time.Second)))
			}
			f.out = strings.Join(lines[:len(lines)-1], " ")
			f.ok = err == nil && code == 200 && size == want
			l.mu.Lock()
			l.all = append(l.all, f)
			l.mu.Unlock()
			if !f.ok && pause < 50*time.Millisecond {
				time.Sleep(50 * time.Millisecond) // no busy loop while nobody answers
			} else {
				time.Sleep(pause)
			}
		}
	}()
	return l
}

func (l *kaLoop) stop() {
	l.cancel()
	<-l.done
}

// between returns the requests started in [from, to).
func (l *kaLoop) between(from, to time.Time) (ok, failed []kaFetch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.all {
		if f.start.Before(from) || !f.start.Before(to) {
			continue
		}
		if f.ok {
			ok = append(ok, f)
		} else {
			failed = append(failed, f)
		}
	}
	return ok, failed
}

// waitOK waits until n requests started at or after from have succeeded.
func (l *kaLoop) waitOK(t *testing.T, from time.Time, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ok, _ := l.between(from, time.Now()); len(ok) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok, failed := l.between(from, time.Now())
	t.Fatalf("%s: %d requests through the VIP succeeded within %s (want %d); failed: %s", l.name, len(ok), within, n, kaDescribe(failed, from))
}

// noFailures fails the test if a request started in [from, to) failed.
func (l *kaLoop) noFailures(t *testing.T, from, to time.Time, what string) {
	t.Helper()
	if _, failed := l.between(from, to); len(failed) > 0 {
		t.Errorf("%s: requests started %s failed: %s", l.name, what, kaDescribe(failed, from))
	}
}

// report logs what the client saw around an event at t0 whose VIP move
// ended at moved: the requests in flight at t0 or started before the move,
// and when it was first served again (the connect time of the first
// successful request started after t0). It returns that gap.
func (l *kaLoop) report(t *testing.T, event string, t0, moved time.Time) time.Duration {
	t.Helper()
	l.mu.Lock()
	var around []kaFetch
	var first kaFetch
	for _, f := range l.all {
		if f.end.After(t0) && f.start.Before(moved) {
			around = append(around, f)
		}
		if first.start.IsZero() && !f.start.Before(t0) && f.ok && !f.connected.IsZero() {
			first = f
		}
	}
	l.mu.Unlock()
	failed := 0
	for _, f := range around {
		if !f.ok {
			failed++
		}
	}
	t.Logf("  %s: %d in flight at the %s or started before the move, %d failed: %s", l.name, len(around), event, failed, kaDescribe(around, t0))
	if first.start.IsZero() {
		t.Errorf("  %s: no successful request after the %s", l.name, event)
		return 0
	}
	gap := first.connected.Sub(t0)
	t.Logf("  %s: first success started after the %s: started %+.2f s, connected %+.2f s, done %+.2f s",
		l.name, event, first.start.Sub(t0).Seconds(), gap.Seconds(), first.end.Sub(t0).Seconds())
	return gap
}

// kaDescribe lists requests relative to t0, runs of one outcome as one.
func kaDescribe(fs []kaFetch, t0 time.Time) string {
	var s []string
	for i := 0; i < len(fs); {
		j := i + 1
		for j < len(fs) && fs[j].ok == fs[i].ok && kaErrKind(fs[j].out) == kaErrKind(fs[i].out) {
			j++
		}
		what := "ok"
		if !fs[i].ok {
			what = fmt.Sprintf("%q", fs[i].out)
		}
		n := ""
		if j-i > 1 {
			n = fmt.Sprintf("%d x ", j-i)
		}
		s = append(s, fmt.Sprintf("[%s%+.2fs..%+.2fs %s]", n, fs[i].start.Sub(t0).Seconds(), fs[j-1].end.Sub(t0).Seconds(), what))
		i = j
	}
	return strings.Join(s, " ")
}

// kaErrKind is curl's error without its details, e.g. "curl: (7)".
func kaErrKind(out string) string {
	if strings.HasPrefix(out, "curl: (") {
		if i := strings.Index(out, ")"); i > 0 {
			return out[:i+1]
		}
	}
	return out
}

// kaVIPHolders returns the nodes whose eth0 carries the VIP.
func kaVIPHolders(t *testing.T, nodes []*kaNode) []int {
	t.Helper()
	var held []int
	for i, n := range nodes {
		out, err := exec.Command("ip", "-n", n.ns, "-br", "-4", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("ip -n %s addr: %v\n%s", n.ns, err, out)
		}
		if strings.Contains(string(out), " "+kaVIP+"/") {
			held = append(held, i)
		}
	}
	return held
}

// kaWaitVIP waits until exactly one node holds the VIP and it is not one of
// not, and returns that node.
func kaWaitVIP(t *testing.T, nodes []*kaNode, within time.Duration, not ...int) int {
	t.Helper()
	deadline := time.Now().Add(within)
	var held []int
	for time.Now().Before(deadline) {
		held = kaVIPHolders(t, nodes)
		if len(held) == 1 && !slices.Contains(not, held[0]) {
			return held[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the VIP is not on exactly one new node after %s: held by %v", within, held)
	return -1
}

// renderKeepalived fills in the per-replica lines of contrib's template and
// points it at the check script's test path.
func renderKeepalived(t *testing.T, tmpl, check, iface, vip string, prio int) string {
	t.Helper()
	out := tmpl
	for _, r := range []struct{ name, value string }{{"IFACE", iface}, {"VIP", vip}, {"PRIORITY", fmt.Sprint(prio)}} {
		re := regexp.MustCompile(`(?m)^\$` + r.name + `=.*$`)
		if !re.MatchString(out) {
			t.Fatalf("contrib/keepalived/keepalived.conf has no $%s= line", r.name)
		}
		out = re.ReplaceAllLiteralString(out, "$"+r.name+"="+r.value)
	}
	const script = "/etc/keepalived/check-mayu.sh"
	for _, mode := range []string{"alive", "ready"} {
		if !strings.Contains(out, `"`+script+" "+mode+`"`) {
			t.Fatalf("contrib/keepalived/keepalived.conf does not run %s %s", script, mode)
		}
	}
	return strings.ReplaceAll(out, script, check)
}

// TestKeepalivedMovesTheVirtualAddress runs contrib/keepalived beside three
// replicas that advertise the VIP, and a client downloading through the VIP
// while the holder dies, while a holder's mayu stops, and while it comes
// back.
func TestKeepalivedMovesTheVirtualAddress(t *testing.T) {
	netlab.Require(t, "keepalived", "curl", "tc")
	seg := netlab.NewSegmentT(t)
	var nodes []*kaNode
	for i, a := range kaAddrs {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, &kaNode{name: name, ns: seg.AddHost(name, a+"/24")})
	}
	db := seg.AddHost("db", kaEtcd+"/24")
	cli := seg.AddHost("cli", kaCli+"/24")
	// The switch port towards the client (p4: the fifth host) runs at
	// 16 Mbit/s, so that an image download takes about 2 s and one is in
	// flight at each event (curl 7.88's --limit-rate does not hold back a
	// fast download).
	if out, err := seg.Run(10*time.Second, seg.Switch, "tc", "qdisc", "add", "dev", "p4", "root", "tbf",
		"rate", "16mbit", "burst", "32kb", "latency", "200ms"); err != nil {
		t.Fatalf("tc on the client's switch port: %v\n%s", err, out)
	}

	// One etcd on its own host: the nodes that die here are mayu's.
	etcdDir := t.TempDir()
	startEtcd := func() *exec.Cmd {
		cmd, _ := seg.Start(db, bins.etcd, "--name", "e1", "--data-dir", etcdDir,
			"--listen-client-urls", "http://"+kaEtcd+":2379", "--advertise-client-urls", "http://"+kaEtcd+":2379",
			"--listen-peer-urls", "http://"+kaEtcd+":2380", "--initial-advertise-peer-urls", "http://"+kaEtcd+":2380",
			"--initial-cluster", "e1=http://"+kaEtcd+":2380", "--log-level", "error")
		kaWaitFor(t, 30*time.Second, "etcd healthy", func() bool {
			out, err := seg.Run(10*time.Second, db, bins.etcdctl, "--endpoints", "http://"+kaEtcd+":2379", "endpoint", "health")
			return err == nil && strings.Contains(out, "is healthy")
		})
		return cmd
	}
	etcd := startEtcd()

	// Three replicas advertising the VIP, each with an image of a few MiB,
	// in place before they start: each hashes what it serves at start, and
	// refuses a file replaced after that.
	image := make([]byte, kaImageMB<<20)
	for i := range image {
		image[i] = byte(i * 7)
	}
	installer := t.TempDir()
	writeFile(t, filepath.Join(installer, "images", "os.img"), image)
	for _, name := range []string{"installer/vmlinuz", "installer/initrd.img"} {
		writeFile(t, filepath.Join(installer, name), []byte("stand-in for "+name))
	}
	for i, n := range nodes {
		n.replica = startReplica(t, seg.TLab, n.ns, replicaOptions{
			name: fmt.Sprintf("r%d", i+1), iface: "eth0", advertise: kaVIP, etcd: []string{"http://" + kaEtcd + ":2379"},
			files: installer,
		})
	}
	kernel, err := os.ReadFile(filepath.Join(nodes[0].replica.dir, "files", "installer", "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		n.replica.waitLog(t, "mayu started", 30*time.Second)
		kaWaitReady(t, seg, n, 30*time.Second)
	}

	// keepalived from contrib/, one per node, in the node's namespace: its
	// check's curl reaches that node's mayu on 127.0.0.1:4082. The script
	// runs as nobody, so its directory must be readable by all.
	tmpl, err := os.ReadFile("../contrib/keepalived/keepalived.conf")
	if err != nil {
		t.Fatal(err)
	}
	check, err := os.ReadFile("../contrib/keepalived/check-mayu.sh")
	if err != nil {
		t.Fatal(err)
	}
	kaDir, err := os.MkdirTemp("", "mayu-e2e-keepalived")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(kaDir) })
	if err := os.Chmod(kaDir, 0o755); err != nil {
		t.Fatal(err)
	}
	checkPath := filepath.Join(kaDir, "check-mayu.sh")
	if err := os.WriteFile(checkPath, check, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		conf := filepath.Join(kaDir, n.name+".conf")
		writeFile(t, conf, []byte(renderKeepalived(t, string(tmpl), checkPath, "eth0", kaVIP+"/24", []int{150, 100, 50}[i])))
		// keepalived -t reports config errors on stderr (2.2.7 then ends by
		// SIGTERM, whatever it found): a clean config prints nothing.
		if out, _ := seg.Run(10*time.Second, n.ns, "keepalived", "-t", "-f", conf); strings.TrimSpace(out) != "" {
			t.Fatalf("keepalived -t %s:\n%s", conf, out)
		}
		// -n: no fork (netlab tracks the parent; the VRRP child and the
		// check scripts are in the namespace and die with it).
		_, n.kaLog = seg.Start(n.ns, "keepalived", "-n", "-l", "-D", "-G", "--vrrp", "-f", conf,
			"-p", filepath.Join(kaDir, n.name+".pid"), "-r", filepath.Join(kaDir, n.name+"-vrrp.pid"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("keepalived %s log:\n%s", n.name, tail(n.kaLog.String(), 40))
			}
		}
	})

	t0 := time.Now()
	h := kaWaitVIP(t, nodes, 15*time.Second)
	t.Logf("%s holds the VIP %.2f s after keepalived started", nodes[h].name, time.Since(t0).Seconds())
	time.Sleep(2 * time.Second)
	if held := kaVIPHolders(t, nodes); len(held) != 1 || held[0] != h {
		t.Fatalf("the VIP did not stay on %s alone: %v", nodes[h].name, held)
	}

	// The client: OS image downloads one after the other, and small
	// requests every 100 ms that time the gap. A download whose server died
	// is never reset (the client sends nothing), so it gives up after 3 s
	// without a byte, as an installer should.
	images := kaStartLoop(seg, cli, "image", len(image), 0, "--max-time", "30",
		"--speed-limit", "1", "--speed-time", "3", "http://"+kaVIP+":4081/boot/image")
	defer images.stop()
	probes := kaStartLoop(seg, cli, "probe", len(kernel), 100*time.Millisecond, "--max-time", "5", "http://"+kaVIP+":4081/boot/kernel")
	defer probes.stop()
	images.waitOK(t, t0, 2, 30*time.Second)
	probes.noFailures(t, t0, time.Now(), "before the first event")

	// 1. The holder dies: every process in its namespace (mayu, keepalived
	// and its VRRP child) is SIGKILLed. A dead machine answers for no
	// address, so the VIP goes with it (keepalived killed with -9 cannot
	// remove it itself).
	dead := h
	kill := time.Now()
	for _, p := range kaNsPids(t, nodes[dead].ns) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	seg.MustIP("-n", nodes[dead].ns, "addr", "del", kaVIP+"/24", "dev", "eth0")
	h = kaWaitVIP(t, nodes, 15*time.Second, dead)
	moved := time.Now()
	t.Logf("holder %s killed (mayu, keepalived: kill -9): %s holds the VIP after %.2f s",
		nodes[dead].name, nodes[h].name, moved.Sub(kill).Seconds())
	images.waitOK(t, moved, 3, 60*time.Second)
	probes.waitOK(t, moved, 3, 10*time.Second)
	if gap := probes.report(t, "kill", kill, moved); gap > 15*time.Second {
		t.Errorf("HTTP through the VIP was out for %s after the kill", gap)
	}
	images.report(t, "kill", kill, moved)
	images.noFailures(t, moved, time.Now(), "after the VIP moved")
	probes.noFailures(t, moved, time.Now(), "after the VIP moved")

	// TFTP answers through the VIP too (from the VIP: pin/tftp replies from
	// the request's destination address).
	want, err := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	if err != nil {
		t.Fatal(err)
	}
	tf := filepath.Join(t.TempDir(), "undionly.kpxe")
	if out, err := seg.Run(20*time.Second, cli, "curl", "-sS", "--max-time", "10", "-o", tf, "tftp://"+kaVIP+"/undionly.kpxe"); err != nil {
		t.Errorf("TFTP through the VIP after the move: %v %s", err, out)
	} else if got, _ := os.ReadFile(tf); string(got) != string(want) {
		t.Errorf("TFTP through the VIP: got %d bytes, want %d", len(got), len(want))
	}

	// 2. The new holder's mayu stops; its keepalived goes on. The check
	// fails twice, the instance goes to FAULT and drops the VIP, the last
	// node takes it.
	notReady := h
	r := nodes[notReady].replica
	stop := time.Now()
	r.cmd.Process.Signal(syscall.SIGTERM)
	h = kaWaitVIP(t, nodes, 15*time.Second, dead, notReady)
	moved = time.Now()
	r.cmd.Wait()
	t.Logf("%s's mayu stopped (SIGTERM; keepalived running): %s holds the VIP after %.2f s",
		nodes[notReady].name, nodes[h].name, moved.Sub(stop).Seconds())
	if !strings.Contains(nodes[notReady].kaLog.String(), "Entering FAULT STATE") {
		t.Errorf("%s's keepalived did not enter FAULT state", nodes[notReady].name)
	}
	images.waitOK(t, moved, 3, 60*time.Second)
	probes.waitOK(t, moved, 3, 10*time.Second)
	if gap := probes.report(t, "stop", stop, moved); gap > 15*time.Second {
		t.Errorf("HTTP through the VIP was out for %s after the stop", gap)
	}
	images.report(t, "stop", stop, moved)
	images.noFailures(t, moved, time.Now(), "after the VIP moved")
	probes.noFailures(t, moved, time.Now(), "after the VIP moved")

	// 3. That mayu comes back: ready again, but nopreempt keeps the VIP
	// where it is (priority 100 > 50 would otherwise take it back and cut
	// the downloads in flight).
	back := time.Now()
	nodes[notReady].replica = &replica{lab: r.lab, ns: r.ns, dir: r.dir, config: r.config}
	nodes[notReady].replica.cmd, nodes[notReady].replica.log = seg.Start(r.ns, bins.mayu, "-config", r.config, "-log-level", "debug")
	nodes[notReady].replica.waitLog(t, "mayu started", 30*time.Second)
	kaWaitReady(t, seg, nodes[notReady], 30*time.Second)
	kaWaitFor(t, 15*time.Second, nodes[notReady].name+"'s keepalived back to BACKUP", func() bool {
		return strings.Count(nodes[notReady].kaLog.String(), "Entering BACKUP STATE") >= 2
	})
	time.Sleep(5 * time.Second)
	if held := kaVIPHolders(t, nodes); len(held) != 1 || held[0] != h {
		t.Errorf("after %s's mayu came back the VIP is on %v, want %s alone (nopreempt)", nodes[notReady].name, held, nodes[h].name)
	} else {
		t.Logf("%s's mayu is back and ready: the VIP stays on %s (nopreempt)", nodes[notReady].name, nodes[h].name)
	}
	images.noFailures(t, back, time.Now(), "while it came back")
	probes.noFailures(t, back, time.Now(), "while it came back")

	// 4. Every etcd member down (this etcd has one). Every replica is
	// unready, but alive: the check lowers their priorities rather than
	// fault them, the VIP stays where it is and boot files keep flowing
	// through it. DHCP goes silent (fail safe) and resumes, fenced, when
	// etcd is back.
	dhcp := &prober{out: filepath.Join(t.TempDir(), "probe.log")}
	dhcp.cmd, _ = seg.Start(cli, bins.dhcpprobe, "-i", "eth0", "-every", "100ms", "-timeout", "500ms", "-macs", "8", "-out", dhcp.out)
	defer dhcp.cmd.Process.Kill()
	kaWaitFor(t, 20*time.Second, "a DHCP answer before the outage", func() bool {
		for _, r := range dhcp.results(t) {
			if r.OK {
				return true
			}
		}
		return false
	})
	prio, faults := map[int]int{}, map[int]int{}
	for i, n := range nodes {
		prio[i] = strings.Count(n.kaLog.String(), "Changing effective priority")
		faults[i] = strings.Count(n.kaLog.String(), "Entering FAULT STATE")
	}
	outage := time.Now()
	etcd.Process.Signal(syscall.SIGKILL)
	etcd.Wait()
	var live []int
	for i := range nodes {
		if i != dead {
			live = append(live, i)
		}
	}
	for _, i := range live {
		kaWaitFor(t, 20*time.Second, nodes[i].name+"'s /readyz saying etcd is unreachable", func() bool {
			out, _ := seg.Run(5*time.Second, nodes[i].ns, "curl", "-s", "--max-time", "3", "http://127.0.0.1:4082/readyz")
			return strings.Contains(out, "etcd unreachable")
		})
	}
	// Well past fall x (interval + the 2 s /readyz takes without etcd)
	// of both checks.
	time.Sleep(8 * time.Second)
	if held := kaVIPHolders(t, nodes); len(held) != 1 || held[0] != h {
		t.Errorf("with etcd down the VIP is on %v, want %s alone", held, nodes[h].name)
	}
	for _, i := range live {
		log := nodes[i].kaLog.String()
		if strings.Count(log, "Entering FAULT STATE") > faults[i] {
			t.Errorf("%s's keepalived entered FAULT with etcd down", nodes[i].name)
		}
		if strings.Count(log, "Changing effective priority") == prio[i] {
			t.Errorf("%s's keepalived did not lower its priority with etcd down", nodes[i].name)
		}
	}
	if out, err := seg.Run(20*time.Second, cli, "curl", "-sS", "--max-time", "10", "-o", tf, "tftp://"+kaVIP+"/undionly.kpxe"); err != nil {
		t.Errorf("TFTP through the VIP with etcd down: %v %s", err, out)
	} else if got, _ := os.ReadFile(tf); string(got) != string(want) {
		t.Errorf("TFTP through the VIP with etcd down: got %d bytes, want %d", len(got), len(want))
	}
	images.waitOK(t, outage, 2, 30*time.Second)
	silentFrom := time.Now()
	time.Sleep(2 * time.Second)
	for _, r := range since(dhcp.results(t), silentFrom) {
		if r.OK {
			t.Errorf("DHCP answered with etcd down: %s to %s by %s", r.IP, r.MAC, r.Server)
			break
		}
	}
	restored := time.Now()
	etcd = startEtcd()
	images.noFailures(t, outage, restored, "with etcd down")
	probes.noFailures(t, outage, restored, "with etcd down")
	okIn, _ := images.between(outage, restored)
	probesIn, _ := probes.between(outage, restored)
	t.Logf("etcd down for %.1f s: the VIP stayed on %s, %d image downloads and %d small requests through it, none failed; TFTP served; DHCP silent",
		restored.Sub(outage).Seconds(), nodes[h].name, len(okIn), len(probesIn))

	// DHCP resumes, fenced: every ACK after the return is from the one
	// leader and durable in etcd under its name, and no address went to
	// two clients.
	var resumed dhcpprobe.Result
	kaWaitFor(t, 60*time.Second, "DHCP answering again after etcd's return", func() bool {
		for _, r := range since(dhcp.results(t), restored) {
			if r.OK {
				resumed = r
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second)
	dhcp.cmd.Process.Signal(syscall.SIGTERM)
	dhcp.cmd.Wait()
	all := dhcp.results(t)
	if err := dhcpprobe.CheckUnique(all); err != nil {
		t.Error(err)
	}
	leader := -1
	for _, i := range live {
		if out, err := seg.Run(5*time.Second, nodes[i].ns, "curl", "-sf", "--max-time", "2", "http://127.0.0.1:4082/leader"); err == nil && strings.HasPrefix(out, "leader") {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no replica leads DHCP after etcd's return")
	}
	out, err := seg.Run(20*time.Second, db, bins.etcdctl, "--endpoints", "http://"+kaEtcd+":2379", "get", "--prefix", "/mayu/leases/", "--print-value-only")
	if err != nil {
		t.Fatal(err, out)
	}
	leases := map[string]leaseValue{}
	for _, line := range strings.Split(out, "\n") {
		var l leaseValue
		if json.Unmarshal([]byte(line), &l) == nil {
			leases[l.IP] = l
		}
	}
	answered := 0
	for _, r := range since(all, restored) {
		if !r.OK {
			continue
		}
		answered++
		if r.Server != kaAddrs[leader] {
			t.Errorf("after etcd's return %s was ACKed %s by %s, not by the leader %s", r.MAC, r.IP, r.Server, nodes[leader].name)
		}
		if l := leases[r.IP]; l.MAC != r.MAC || l.Leader != fmt.Sprintf("r%d", leader+1) {
			t.Errorf("the ACK of %s to %s after etcd's return is not in etcd (%+v)", r.IP, r.MAC, l)
		}
	}
	t.Logf("etcd back: DHCP answered again %.1f s later, %d ACKs since, all by the leader r%d and in etcd",
		resumed.End.Sub(restored).Seconds(), answered, leader+1)

	images.stop()
	probes.stop()
	for _, l := range []*kaLoop{images, probes} {
		ok, failed := l.between(time.Time{}, time.Now())
		t.Logf("%s requests through the VIP: %d ok, %d failed", l.name, len(ok), len(failed))
	}
}

// kaWaitReady waits until the node's /readyz answers 200.
func kaWaitReady(t *testing.T, seg *netlab.TSegment, n *kaNode, within time.Duration) {
	t.Helper()
	kaWaitFor(t, within, n.name+" ready", func() bool {
		_, err := seg.Run(5*time.Second, n.ns, "curl", "-fsS", "--max-time", "1", "-o", "/dev/null", "http://127.0.0.1:4082/readyz")
		return err == nil
	})
}

func kaWaitFor(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for: %s", within, what)
}

// kaNsPids lists the processes in network namespace ns.
func kaNsPids(t *testing.T, ns string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var p int
		if _, err := fmt.Sscan(f, &p); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// check-mayu.sh's two modes against a stand-in for mayu's metrics port:
// alive fails only when mayu does not answer /healthz or /readyz says it
// must not serve; ready fails whenever /readyz is not 200; no argument
// means ready (an older keepalived.conf's one check).
func TestCheckMayuScript(t *testing.T) {
	netlab.Require(t, "curl")
	for _, c := range []struct {
		name         string
		healthz      bool
		readyz       int
		body         string
		alive, ready bool // exit 0 of each mode
	}{
		{"ready", true, 200, "ready", true, true},
		{"etcd unreachable", true, 503, "not ready: etcd unreachable: context deadline exceeded", true, false},
		{"config differs", true, 503, "not ready: cluster configuration differs from the DHCP leader's: x", false, false},
		{"lacks an artifact", true, 503, "not ready: this replica still lacks artifacts a peer has held for over 5m0s: a", false, false},
		{"healthz down", false, 503, "not ready: etcd unreachable: x", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/healthz":
					if !c.healthz {
						http.Error(w, "down", http.StatusInternalServerError)
						return
					}
					fmt.Fprintln(w, "ok")
				case "/readyz":
					if c.readyz != 200 {
						http.Error(w, c.body, c.readyz)
						return
					}
					fmt.Fprintln(w, c.body)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			run := func(env string, args ...string) bool {
				cmd := exec.Command("sh", append([]string{"../contrib/keepalived/check-mayu.sh"}, args...)...)
				cmd.Env = append(os.Environ(), env)
				out, err := cmd.CombinedOutput()
				t.Logf("check-mayu.sh %v: %v %s", args, err, out)
				return err == nil
			}
			base := "MAYU_HEALTH=" + srv.URL
			if got := run(base, "alive"); got != c.alive {
				t.Errorf("alive: exit 0 = %v, want %v", got, c.alive)
			}
			if got := run(base, "ready"); got != c.ready {
				t.Errorf("ready: exit 0 = %v, want %v", got, c.ready)
			}
			if got := run("MAYU_READYZ=" + srv.URL + "/readyz"); got != c.ready {
				t.Errorf("no argument, MAYU_READYZ: exit 0 = %v, want %v", got, c.ready)
			}
		})
	}
	// Nothing listening: not alive.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	cmd := exec.Command("sh", "../contrib/keepalived/check-mayu.sh", "alive")
	cmd.Env = append(os.Environ(), "MAYU_HEALTH="+url)
	if err := cmd.Run(); err == nil {
		t.Error("alive with nothing listening: exit 0")
	}
}
