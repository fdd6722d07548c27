package e2e

import (
	"context"
	"fmt"
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

	"github.com/mayu-boot/mayu/internal/netlab"
)

// The keepalived test's segment: three replica nodes, an etcd host and a
// client. The client is not at 10.99.0.250 here (as in newCluster): that
// is the virtual address.
const (
	kaVIP     = "10.99.0.250"
	kaEtcd    = "10.99.0.10"
	kaCli     = "10.99.0.200"
	kaImageMB = 4 // downloaded at 2 MiB/s: about 2 s each
)

var kaAddrs = []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"}

// kaNode is one replica machine: mayu and keepalived in one namespace.
type kaNode struct {
	name    string
	ns      string
	replica *replica
	ka      *exec.Cmd
	kaLog   *netlab.Output
}

// kaDownload is one HTTP download of the OS image through the VIP.
type kaDownload struct {
	start, end time.Time
	connected  time.Time // zero if it never connected
	ok         bool
	out        string
}

// kaDownloader fetches /boot/image through the VIP from the client, one
// download after the other, until stopped.
type kaDownloader struct {
	mu     sync.Mutex
	all    []kaDownload
	cancel context.CancelFunc
	done   chan struct{}
}

func kaStartDownloads(seg *netlab.Segment, cli string, want int64) *kaDownloader {
	ctx, cancel := context.WithCancel(context.Background())
	d := &kaDownloader{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for ctx.Err() == nil {
			dl := kaDownload{start: time.Now()}
			// A stalled download gives up after 3 s, as an installer's
			// would: a client whose server died sends nothing, so it is
			// never reset and would wait for --max-time otherwise.
			out, err := seg.Command(ctx, cli, "curl", "-sS", "--max-time", "20", "--limit-rate", "2M",
				"--speed-limit", "1", "--speed-time", "3", "-o", "/dev/null",
				"-w", "\n%{http_code} %{size_download} %{time_connect}", "http://"+kaVIP+":4081/boot/image").CombinedOutput()
			dl.end, dl.out = time.Now(), strings.TrimSpace(string(out))
			var code, size int64
			var connect float64
			lines := strings.Split(dl.out, "\n")
			if _, err := fmt.Sscan(lines[len(lines)-1], &code, &size, &connect); err == nil && connect > 0 {
				dl.connected = dl.start.Add(time.Duration(connect * float64(time.Second)))
			}
			if len(lines) > 1 {
				dl.out = strings.Join(lines[:len(lines)-1], " ")
			}
			dl.ok = err == nil && code == 200 && size == want
			if ctx.Err() != nil {
				return // cut short by stop: not a result
			}
			d.mu.Lock()
			d.all = append(d.all, dl)
			d.mu.Unlock()
			if !dl.ok {
				time.Sleep(50 * time.Millisecond) // no busy loop while nobody answers
			}
		}
	}()
	return d
}

func (d *kaDownloader) stop() {
	d.cancel()
	<-d.done
}

// between returns the downloads started in [from, to).
func (d *kaDownloader) between(from, to time.Time) (ok, failed []kaDownload) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dl := range d.all {
		if dl.start.Before(from) || !dl.start.Before(to) {
			continue
		}
		if dl.ok {
			ok = append(ok, dl)
		} else {
			failed = append(failed, dl)
		}
	}
	return ok, failed
}

// waitOK waits until n downloads started at or after from have succeeded.
func (d *kaDownloader) waitOK(t *testing.T, from time.Time, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ok, _ := d.between(from, time.Now()); len(ok) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok, failed := d.between(from, time.Now())
	t.Fatalf("%d downloads through the VIP succeeded within %s (want %d); failed: %s", len(ok), within, n, kaDescribe(failed, from))
}

// kaDescribe lists downloads relative to t0, runs of the same error as one.
func kaDescribe(dls []kaDownload, t0 time.Time) string {
	var s []string
	for i := 0; i < len(dls); {
		j := i + 1
		for j < len(dls) && dls[j].ok == dls[i].ok && kaErrKind(dls[j].out) == kaErrKind(dls[i].out) {
			j++
		}
		what := "ok"
		if !dls[i].ok {
			what = fmt.Sprintf("%q", dls[i].out)
		}
		n := ""
		if j-i > 1 {
			n = fmt.Sprintf("%d x ", j-i)
		}
		s = append(s, fmt.Sprintf("[%s%+.2fs..%+.2fs %s]", n, dls[i].start.Sub(t0).Seconds(), dls[j-1].end.Sub(t0).Seconds(), what))
		i = j
	}
	return strings.Join(s, " ")
}

// report logs the downloads around an event at t0 whose VIP move ended at
// moved: those in flight at t0 and started until the move (a download in
// flight at the kill may fail: the client of a dead server is never reset,
// it stalls), and when the client was first served again.
func (d *kaDownloader) report(t *testing.T, event string, t0, moved time.Time) {
	t.Helper()
	d.mu.Lock()
	var around []kaDownload
	for _, dl := range d.all {
		if dl.end.After(t0) && dl.start.Before(moved) {
			around = append(around, dl)
		}
	}
	d.mu.Unlock()
	failed := 0
	for _, dl := range around {
		if !dl.ok {
			failed++
		}
	}
	t.Logf("  downloads in flight at the %s or started before the move: %d, %d failed, relative to the %s: %s",
		event, len(around), failed, event, kaDescribe(around, t0))
	if dl, ok := d.firstConnected(t0); ok {
		t.Logf("  first successful download started after the %s: started %+.2f s, connected %+.2f s, done %+.2f s",
			event, dl.start.Sub(t0).Seconds(), dl.connected.Sub(t0).Seconds(), dl.end.Sub(t0).Seconds())
	}
}

// kaErrKind is curl's error without its numbers, e.g. "curl: (7)".
func kaErrKind(out string) string {
	k, _, _ := strings.Cut(out, ":")
	if strings.HasPrefix(out, "curl: (") {
		k = out[:strings.Index(out, ")")+1]
	}
	return k
}

// firstConnected returns the first download started at or after from that
// connected and succeeded.
func (d *kaDownloader) firstConnected(from time.Time) (kaDownload, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dl := range d.all {
		if !dl.start.Before(from) && dl.ok && !dl.connected.IsZero() {
			return dl, true
		}
	}
	return kaDownload{}, false
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
		time.Sleep(50 * time.Millisecond)
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
	if !strings.Contains(out, `"`+script+`"`) {
		t.Fatalf("contrib/keepalived/keepalived.conf does not run %s", script)
	}
	return strings.ReplaceAll(out, script, check)
}

func TestKeepalivedMovesTheVirtualAddress(t *testing.T) {
	netlab.Require(t, "keepalived", "curl")
	seg := netlab.NewSegment(t)
	var nodes []*kaNode
	for i, a := range kaAddrs {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, &kaNode{name: name, ns: seg.AddHost(name, a+"/24")})
	}
	db := seg.AddHost("db", kaEtcd+"/24")
	cli := seg.AddHost("cli", kaCli+"/24")

	// One etcd on its own host: the nodes that die here are mayu's.
	seg.Start(db, bins.etcd, "--name", "e1", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+kaEtcd+":2379", "--advertise-client-urls", "http://"+kaEtcd+":2379",
		"--listen-peer-urls", "http://"+kaEtcd+":2380", "--initial-advertise-peer-urls", "http://"+kaEtcd+":2380",
		"--initial-cluster", "e1=http://"+kaEtcd+":2380", "--log-level", "error")
	kaWaitFor(t, 30*time.Second, "etcd healthy", func() bool {
		out, err := seg.Run(10*time.Second, db, bins.etcdctl, "--endpoints", "http://"+kaEtcd+":2379", "endpoint", "health")
		return err == nil && strings.Contains(out, "is healthy")
	})

	// Three replicas advertising the VIP, each with an image of a few MiB
	// (mayu opens the file per request: replacing it after start is fine).
	image := make([]byte, kaImageMB<<20)
	for i := range image {
		image[i] = byte(i * 7)
	}
	for i, n := range nodes {
		n.replica = startReplica(t, seg.Lab, n.ns, replicaOptions{
			name: fmt.Sprintf("r%d", i+1), iface: "eth0", advertise: kaVIP, etcd: "[http://" + kaEtcd + ":2379]",
		})
		writeFile(t, filepath.Join(n.replica.dir, "files", "images", "os.img"), image)
	}
	for _, n := range nodes {
		n.replica.waitLog(t, "mayu started", 30*time.Second)
		kaWaitReady(t, seg, n, true, 30*time.Second)
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
		// SIGTERM, whatever it found): a clean template prints nothing.
		if out, _ := seg.Run(10*time.Second, n.ns, "keepalived", "-t", "-f", conf); strings.TrimSpace(out) != "" {
			t.Fatalf("keepalived -t %s:\n%s", conf, out)
		}
		n.ka, n.kaLog = seg.Start(n.ns, "keepalived", "-n", "-l", "-D", "-G", "--vrrp", "-f", conf,
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

	dl := kaStartDownloads(seg, cli, int64(len(image)))
	defer dl.stop()
	dl.waitOK(t, t0, 2, 30*time.Second)

	// 1. The holder dies: mayu and keepalived SIGKILLed. A dead machine
	// answers for no address, so the VIP goes with it (keepalived killed
	// with -9 cannot remove it itself).
	dead := h
	kill := time.Now()
	for _, p := range kaNsPids(t, nodes[dead].ns) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	seg.MustIP("-n", nodes[dead].ns, "addr", "del", kaVIP+"/24", "dev", "eth0")
	h = kaWaitVIP(t, nodes, 15*time.Second, dead)
	moved := time.Now()
	t.Logf("holder %s killed (mayu and keepalived, kill -9): %s holds the VIP after %.2f s",
		nodes[dead].name, nodes[h].name, moved.Sub(kill).Seconds())
	dl.waitOK(t, moved, 3, 60*time.Second)
	dl.report(t, "kill", kill, moved)
	if _, failed := dl.between(moved, time.Now()); len(failed) > 0 {
		t.Errorf("downloads started after the VIP moved failed: %s", kaDescribe(failed, moved))
	}
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
	r.cmd.Wait()
	h = kaWaitVIP(t, nodes, 15*time.Second, dead, notReady)
	moved = time.Now()
	t.Logf("%s's mayu stopped (keepalived running): %s holds the VIP after %.2f s",
		nodes[notReady].name, nodes[h].name, moved.Sub(stop).Seconds())
	if !strings.Contains(nodes[notReady].kaLog.String(), "Entering FAULT STATE") {
		t.Errorf("%s's keepalived did not enter FAULT state", nodes[notReady].name)
	}
	dl.waitOK(t, moved, 3, 60*time.Second)
	dl.report(t, "stop", stop, moved)
	if _, failed := dl.between(moved, time.Now()); len(failed) > 0 {
		t.Errorf("downloads started after the VIP moved failed: %s", kaDescribe(failed, moved))
	}

	// 3. That mayu comes back: ready again, but nopreempt keeps the VIP
	// where it is (priority 100 > 50 would otherwise take it back and cut
	// the downloads in flight).
	back := time.Now()
	nodes[notReady].replica = &replica{lab: r.lab, ns: r.ns, dir: r.dir, config: r.config}
	nodes[notReady].replica.cmd, nodes[notReady].replica.log = seg.Start(r.ns, bins.mayu, "-config", r.config, "-log-level", "debug")
	nodes[notReady].replica.waitLog(t, "mayu started", 30*time.Second)
	kaWaitReady(t, seg, nodes[notReady], true, 30*time.Second)
	kaWaitFor(t, 15*time.Second, nodes[notReady].name+"'s keepalived back to BACKUP", func() bool {
		return strings.Count(nodes[notReady].kaLog.String(), "Entering BACKUP STATE") >= 2
	})
	time.Sleep(5 * time.Second)
	if held := kaVIPHolders(t, nodes); len(held) != 1 || held[0] != h {
		t.Errorf("after %s's mayu came back the VIP is on %v, want %s alone (nopreempt)", nodes[notReady].name, held, nodes[h].name)
	}
	if ok, failed := dl.between(back, time.Now()); len(failed) > 0 || len(ok) == 0 {
		t.Errorf("downloads while %s came back: %d ok, failed: %s", nodes[notReady].name, len(ok), kaDescribe(failed, back))
	}

	dl.stop()
	ok, failed := dl.between(time.Time{}, time.Now())
	_ = failed
	t.Logf("downloads of %d MiB through the VIP: %d ok, %d failed", kaImageMB, len(ok), len(failed))
}

// kaWaitReady waits until the node's /readyz answers 200 (ready) or not.
func kaWaitReady(t *testing.T, seg *netlab.Segment, n *kaNode, ready bool, within time.Duration) {
	t.Helper()
	kaWaitFor(t, within, n.name+" ready", func() bool {
		_, err := seg.Run(5*time.Second, n.ns, "curl", "-fsS", "--max-time", "1", "-o", "/dev/null", "http://127.0.0.1:4082/readyz")
		return (err == nil) == ready
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
