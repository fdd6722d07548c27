package e2e

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
	"github.com/mayu-boot/mayu/internal/netlab"
)

// The chaos test's knobs. The defaults keep it near three minutes on two
// cores; CHAOS_SEED replays a run's choice of faults.
const (
	chaosLease = 10 * time.Minute // the fixture's lease_time
	// chaosWatchLag is how long after an install is durable the leader may
	// still answer the machine: it learns of the install through its etcd
	// watch. Past it, an answer is a machine about to be installed again.
	chaosWatchLag = 3 * time.Second
	chaosMacBase  = 1000 // the installing machines' prober MAC indexes
)

func chaosEnv(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 2m", name, v)
	}
	return d
}

func chaosInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// chaosEvent is one line of the timeline the test prints.
type chaosEvent struct {
	at   time.Time
	what string
}

type chaosRun struct {
	*cluster
	t0   time.Time
	rng  *rand.Rand // the faults' (CHAOS_SEED replays them); main goroutine only
	deck []int      // the kinds of fault still to come in this round
	mu   sync.Mutex
	log  []chaosEvent
	logs []*netlab.Output // every replica process's output, restarted ones too
}

func (c *chaosRun) event(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, chaosEvent{time.Now(), fmt.Sprintf(format, args...)})
}

// leaderNow is the replica that says it leads DHCP, -1 if none does (a
// frozen or cut-off one does not answer). A deposed leader that has not
// noticed yet may say so beside the new one: either is a fine target.
func (c *chaosRun) leaderNow() int {
	for i, r := range c.replicas {
		if r.cmd.ProcessState != nil {
			continue
		}
		if out, err := c.seg.Run(3*time.Second, c.nodes[i], "curl", "-sf", "--max-time", "1", "http://127.0.0.1:4082/leader"); err == nil && strings.HasPrefix(out, "leader") {
			return i
		}
	}
	return -1
}

func (c *chaosRun) waitLeader(within time.Duration) int {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if l := c.leaderNow(); l >= 0 {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
	return -1
}

func (c *chaosRun) restart(i int) {
	c.restartReplica(i)
	c.logs = append(c.logs, c.replicas[i].log)
}

// hold is how long a fault lasts: sometimes shorter than the election
// TTL (3s), sometimes longer.
func (c *chaosRun) hold() time.Duration {
	return time.Duration(500+c.rng.Intn(4500)) * time.Millisecond
}

// fault does one thing to the DHCP leader and undoes it.
func (c *chaosRun) fault() {
	l := c.leaderNow()
	if l < 0 {
		c.event("no replica says it leads: waiting")
		return
	}
	r, name := c.replicas[l], fmt.Sprintf("r%d", l+1)
	hold := c.hold()
	// Each kind once in every four faults, in random order, so that a
	// short run sees them all.
	if len(c.deck) == 0 {
		c.deck = c.rng.Perm(4)
	}
	kind := c.deck[0]
	c.deck = c.deck[1:]
	switch kind {
	case 0:
		c.event("kill -9 %s (leader)", name)
		r.cmd.Process.Signal(syscall.SIGKILL)
		r.cmd.Wait()
		time.Sleep(hold)
		c.restart(l)
		c.event("%s restarted after %s", name, hold.Round(time.Millisecond))
	case 1:
		c.event("SIGSTOP %s (leader) for %s", name, hold.Round(time.Millisecond))
		r.cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(hold)
		r.cmd.Process.Signal(syscall.SIGCONT)
		c.event("SIGCONT %s", name)
	case 2:
		c.event("kill -9 etcd member e%d (beside leader %s)", l+1, name)
		c.stopEtcd(l)
		time.Sleep(hold)
		c.startEtcd(l)
		c.event("etcd member e%d restarted after %s", l+1, hold.Round(time.Millisecond))
	case 3:
		// The switch port: the host keeps its address and its processes
		// run on, cut off from everyone, its etcd member with it.
		port := fmt.Sprintf("p%d", l)
		c.event("cut %s's link (leader; its etcd member with it)", name)
		c.seg.MustIP("-n", c.seg.Switch, "link", "set", port, "down")
		time.Sleep(hold)
		c.seg.MustIP("-n", c.seg.Switch, "link", "set", port, "up")
		c.event("%s's link restored after %s", name, hold.Round(time.Millisecond))
	}
}

// chaosMachine is one machine installing over HTTP as its iPXE and
// first-stage script would, through whichever replica answers.
type chaosMachine struct {
	serial, id, mac string
	installedAt     time.Time // when the installer knew it was installed
	calls, retries  int
	done            bool
	problem         string // a refusal the installer could not get past
	ipxeAfter       string // what /ipxe answered after the install
	rng             *rand.Rand
}

// call makes one node call, moving to the next replica on a transport
// error or a 5xx, as the first-stage script does with mayu_urls, until
// the deadline. It returns the status and body of the first answer that
// is not a 5xx.
func (c *chaosRun) call(m *chaosMachine, method, rawURL string, deadline time.Time) (int, string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err.Error()
	}
	for try := m.rng.Intn(len(c.addrs)); time.Now().Before(deadline); try++ {
		u.Host = c.addrs[try%len(c.addrs)] + ":4081"
		m.calls++
		out, err := c.seg.Run(10*time.Second, c.cli, "curl", "-sS", "--max-time", "3", "-X", method, "-w", "\n%{http_code}", u.String())
		i := strings.LastIndexByte(out, '\n')
		code, _ := strconv.Atoi(strings.TrimSpace(out[i+1:]))
		if err == nil && code > 0 && code < 500 {
			return code, out[:max(i, 0)]
		}
		m.retries++
		time.Sleep(300 * time.Millisecond)
	}
	return 0, "gave up at the deadline"
}

var (
	chaosFirstStage = regexp.MustCompile(`mayu\.first_stage=(\S+)`)
	chaosInstalled  = regexp.MustCompile(`'(http://[^']*/installed\?token=[^']*)'`)
	chaosFinal      = regexp.MustCompile(`'(http://[^']*/final-config\?token=[^']*)'`)
)

// install walks m through /ipxe, first-stage, the installer's files and
// the image, final-config, installed and boot-complete.
func (c *chaosRun) install(m *chaosMachine, deadline time.Time) {
	ipxe := fmt.Sprintf("http://%s:4081/ipxe?serial=%s&mac=%s", c.addrs[0], hex.EncodeToString([]byte(m.serial)), m.mac)
	var first []string
	for first == nil {
		code, body := c.call(m, "GET", ipxe, deadline)
		if code == 0 {
			m.problem = "/ipxe: " + body
			return
		}
		// Without etcd the script says why, waits and asks again.
		if first = chaosFirstStage.FindStringSubmatch(body); first == nil {
			m.retries++
			time.Sleep(time.Second)
		}
	}
	code, fs := c.call(m, "GET", first[1], deadline)
	inst, final := chaosInstalled.FindStringSubmatch(fs), chaosFinal.FindStringSubmatch(fs)
	if code != 200 || inst == nil || final == nil {
		m.problem = fmt.Sprintf("first-stage: %d %.200q", code, fs)
		return
	}
	for _, f := range []string{"/boot/kernel", "/boot/initrd", "/boot/image"} {
		if code, body := c.call(m, "GET", "http://"+c.addrs[0]+":4081"+f, deadline); code != 200 {
			m.problem = fmt.Sprintf("%s: %d %.200q", f, code, body)
			return
		}
	}
	if code, body := c.call(m, "GET", final[1], deadline); code != 200 {
		m.problem = fmt.Sprintf("final-config: %d %.200q", code, body)
		return
	}
	code, body := c.call(m, "POST", inst[1], deadline)
	if code/100 != 2 {
		// A retry of a call that was carried out but whose answer was
		// lost is refused (an installed machine's token opens nothing
		// but boot-complete): the record says whether it happened.
		if st, _ := c.machineState(m.id); st != "installed" {
			m.problem = fmt.Sprintf("installed: %d %.200q (state %q)", code, body, st)
			return
		}
	}
	m.installedAt = time.Now()
	bc := strings.Replace(inst[1], "/installed?", "/boot-complete?", 1)
	if code, body := c.call(m, "POST", bc, deadline); code/100 != 2 {
		m.problem = fmt.Sprintf("boot-complete: %d %.200q", code, body)
		return
	}
	_, m.ipxeAfter = c.call(m, "GET", ipxe, deadline)
	m.done = true
}

// machineRecord is what the test reads of a record in etcd.
type machineRecord struct {
	State   string `json:"state"`
	History []struct {
		State   string `json:"state"`
		Replica string `json:"replica"`
	} `json:"history"`
}

func (c *chaosRun) machineState(id string) (string, error) {
	out, err := c.seg.Run(10*time.Second, c.nodes[0], bins.etcdctl, "--endpoints", endpoints, "get", "/mayu/machines/"+id, "--print-value-only")
	if err != nil {
		return "", err
	}
	var m machineRecord
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &m); err != nil {
		return "", err
	}
	return m.State, nil
}

// TestChaosWithoutLoss runs three replicas on a 3-member etcd, several
// hundred DHCP clients exchanging without pause and machines installing
// over HTTP, while the DHCP leader is killed, frozen, cut off or loses its
// etcd member, at random every few seconds. It asserts what must hold
// whatever happened, never how fast: no address ACKed to two MACs at once
// (from the clients' own logs), every client's last ACK durable in etcd,
// no installed machine answered or installed again, no replica panicked.
//
// CHAOS_DURATION (default 2m, 20s with -short) is the time under faults, CHAOS_CLIENTS
// (300) the DHCP clients, CHAOS_MACHINES (12) the installing machines,
// CHAOS_SEED the random choices (printed).
func TestChaosWithoutLoss(t *testing.T) {
	netlab.Require(t, "curl")
	def := 2 * time.Minute
	if testing.Short() {
		def = 20 * time.Second
	}
	duration := chaosEnv(t, "CHAOS_DURATION", def)
	clients := chaosInt(t, "CHAOS_CLIENTS", 300)
	machines := chaosInt(t, "CHAOS_MACHINES", 12)
	seed := time.Now().UnixNano()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
	}
	t.Logf("chaos: %s, %d DHCP clients, %d installing machines, CHAOS_SEED=%d", duration, clients, machines, seed)

	c := &chaosRun{cluster: newClusterWith(t, replicaOptions{wideSegment: true}), rng: rand.New(rand.NewSource(seed))}
	for _, r := range c.replicas {
		c.logs = append(c.logs, r.log)
	}
	if c.waitLeader(30*time.Second) < 0 {
		t.Fatal("no replica leads DHCP")
	}

	// The DHCP clients: probers of 100 MACs each, one exchange every
	// 100 ms each, every other one of a client a lone REQUEST for its
	// address (-renew), and one for the installing machines' MACs, which
	// must go silent once each is installed.
	dir := t.TempDir()
	var probers []*prober
	startProber := func(name string, base, n int, every string) {
		out := filepath.Join(dir, name+".log")
		cmd, _ := c.seg.Start(c.cli, bins.dhcpprobe, "-i", "eth0", "-every", every, "-timeout", "1s", "-renew",
			"-mac-base", fmt.Sprint(base), "-macs", fmt.Sprint(n), "-out", out)
		probers = append(probers, &prober{cmd: cmd, out: out})
	}
	for base := 0; base < clients; base += 100 {
		startProber(fmt.Sprintf("clients-%d", base), base, min(100, clients-base), "100ms")
	}
	startProber("machines", chaosMacBase, machines, "200ms")

	// The machines, one starting every duration/machines.
	c.t0 = time.Now()
	c.event("chaos starts")
	ms := make([]*chaosMachine, machines)
	var wg sync.WaitGroup
	installDeadline := c.t0.Add(duration + 2*time.Minute)
	for k := range ms {
		serial := fmt.Sprintf("CHAOS-%02d", k)
		ms[k] = &chaosMachine{serial: serial, id: strings.ToLower(serial), mac: dhcpprobe.MAC(chaosMacBase + k).String(),
			rng: rand.New(rand.NewSource(seed + int64(k) + 1))}
		wg.Add(1)
		go func(m *chaosMachine, after time.Duration) {
			defer wg.Done()
			time.Sleep(after)
			c.install(m, installDeadline)
		}(ms[k], time.Duration(k)*duration/time.Duration(machines))
	}
	for time.Since(c.t0) < duration {
		time.Sleep(time.Duration(1000+c.rng.Intn(3000)) * time.Millisecond)
		c.fault()
	}
	c.event("chaos ends")

	// Everything is back: wait for a leader and the installs, then stop
	// the clients and read etcd.
	if c.waitLeader(60*time.Second) < 0 {
		t.Error("no replica leads DHCP after the chaos")
	}
	wg.Wait()
	time.Sleep(3 * time.Second)
	var all, machineProbes []dhcpprobe.Result
	for _, p := range probers {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		rs := p.results(t)
		all = append(all, rs...)
		if strings.HasSuffix(p.out, "machines.log") {
			machineProbes = rs
		}
	}
	c.report(t, all, machineProbes, ms)
}

// report checks the outcome and prints the timeline and the counts.
func (c *chaosRun) report(t *testing.T, all, machineProbes []dhcpprobe.Result, ms []*chaosMachine) {
	c.mu.Lock()
	events := append([]chaosEvent(nil), c.log...)
	c.mu.Unlock()
	slices.SortStableFunc(events, func(a, b chaosEvent) int { return a.at.Compare(b.at) })
	var tl strings.Builder
	for _, e := range events {
		fmt.Fprintf(&tl, "  %+8.2fs  %s\n", e.at.Sub(c.t0).Seconds(), e.what)
	}
	t.Logf("what the test did:\n%s", tl.String())

	// 1. No address ACKed to two MACs at once, from the clients' logs.
	if err := dhcpprobe.CheckOverlap(all, chaosLease); err != nil {
		t.Error(err)
	}
	// With no lease running out in the test, a client keeps its address.
	if err := dhcpprobe.CheckStable(all); err != nil {
		t.Error(err)
	}

	// 2. Every client's last ACK is its lease in etcd.
	out, err := c.seg.Run(30*time.Second, c.nodes[0], bins.etcdctl, "--endpoints", endpoints,
		"get", "--prefix", "/mayu/leases/", "--print-value-only")
	if err != nil {
		t.Fatal(err, out)
	}
	byMAC := map[string]string{} // mac → ip in etcd
	leases := 0
	for _, line := range strings.Split(out, "\n") {
		var lv leaseValue
		if strings.TrimSpace(line) == "" || json.Unmarshal([]byte(line), &lv) != nil {
			continue
		}
		leases++
		if ip, dup := byMAC[lv.MAC]; dup {
			t.Errorf("etcd holds two leases for %s: %s and %s", lv.MAC, ip, lv.IP)
		}
		byMAC[lv.MAC] = lv.IP
	}
	last := map[string]dhcpprobe.Result{}
	ok, servers := 0, map[string]int{}
	for _, r := range all {
		if !r.OK {
			continue
		}
		ok++
		servers[r.Server]++
		if p, seen := last[r.MAC]; !seen || r.Start.After(p.Start) {
			last[r.MAC] = r
		}
	}
	bad := 0
	for mac, r := range last {
		if byMAC[mac] != r.IP {
			if bad++; bad <= 5 {
				t.Errorf("%s's last ACK was %s at %+.2fs by %s, etcd has %q", mac, r.IP, r.Start.Sub(c.t0).Seconds(), r.Server, byMAC[mac])
			}
		}
	}
	if bad > 5 {
		t.Errorf("and %d more clients whose last ACK is not their lease in etcd", bad-5)
	}
	unseen := 0
	for mac := range byMAC {
		if _, seen := last[mac]; !seen {
			unseen++ // written, its ACK lost: harmless, the client asks again
		}
	}

	// 3. Installed machines stay silent to DHCP and are installed once.
	installed, silent := 0, 0
	for _, m := range ms {
		if m.problem != "" || !m.done {
			t.Errorf("machine %s did not finish installing: %s", m.id, m.problem)
			continue
		}
		installed++
		for _, r := range machineProbes {
			if r.MAC != m.mac || !r.Start.After(m.installedAt.Add(chaosWatchLag)) {
				continue
			}
			silent++
			if r.OK {
				t.Errorf("installed machine %s (%s, installed at %+.2fs) was answered at %+.2fs by %s",
					m.id, m.mac, m.installedAt.Sub(c.t0).Seconds(), r.Start.Sub(c.t0).Seconds(), r.Server)
				break
			}
		}
		if chaosFirstStage.MatchString(m.ipxeAfter) {
			t.Errorf("installed machine %s got the installer again from /ipxe", m.id)
		}
		out, err := c.seg.Run(10*time.Second, c.nodes[0], bins.etcdctl, "--endpoints", endpoints, "get", "/mayu/machines/"+m.id, "--print-value-only")
		var rec machineRecord
		if err == nil {
			err = json.Unmarshal([]byte(strings.TrimSpace(out)), &rec)
		}
		if err != nil {
			t.Errorf("machine %s: reading its record: %v %s", m.id, err, out)
			continue
		}
		n := 0
		for _, e := range rec.History {
			if e.State == "installed" {
				n++
			}
		}
		if n != 1 || rec.State != "running" {
			t.Errorf("machine %s: state %s, installed %d times: %+v", m.id, rec.State, n, rec.History)
		}
	}

	// 4. No replica panicked, in any of its lives.
	for _, l := range c.logs {
		s := l.String()
		for _, bad := range []string{"panic:", "fatal error:"} {
			if i := strings.Index(s, bad); i >= 0 {
				t.Errorf("a replica logged %q:\n%s", bad, s[i:min(len(s), i+3000)])
			}
		}
	}

	calls, retries := 0, 0
	for _, m := range ms {
		calls, retries = calls+m.calls, retries+m.retries
	}
	sum := dhcpprobe.Summarize(all)
	t.Logf("what the test saw: %d DHCP exchanges by %d clients, %d ACKed (by %v), %s; "+
		"%d leases in etcd (%d written whose ACK no client saw); "+
		"%d of %d machines installed (%d node calls, %d retried), asked DHCP %d times after, never answered; %d replica processes, none panicked",
		len(all), len(last), ok, servers, sum, leases, unseen, installed, len(ms), calls, retries, silent, len(c.logs))
}
