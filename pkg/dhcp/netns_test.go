package dhcp

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

// inNetns runs f on an OS thread that joined network namespace ns, and
// brings the thread back to this process's namespace afterwards (else the
// thread dies with the goroutine). Sockets f opens stay in ns. The thread
// must come back: if it were the process's main thread, `ip netns pids`
// would count the whole test as a process of ns, and the lab's cleanup
// would kill it.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("netns %s: %v", ns, err)
	}
}

// The probes with real packets between two namespaces: the server's side
// (srv0 10.99.0.1/24 and 10.98.0.1/16) asks; the other side, a host that
// owns 10.99.0.120 on the segment and 10.98.0.50 behind the "relay",
// answers. Nobody has 10.99.0.121 or 10.98.0.51.
func TestProbesFindAddressesInUse(t *testing.T) {
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Srv, "addr", "add", "10.98.0.1/16", "dev", "srv0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.120/24", "dev", "cli0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.98.0.50/16", "dev", "cli0")
	var ownerMAC net.HardwareAddr
	var err error
	inNetns(t, lab.Cli, func() {
		if ifi, e := net.InterfaceByName("cli0"); e == nil {
			ownerMAC = ifi.HardwareAddr
		} else {
			err = e
		}
	})
	if err != nil || ownerMAC == nil {
		t.Fatalf("cli0: %v", err)
	}
	stranger := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	p := netProber{iface: "srv0", src: netip.MustParseAddr("10.99.0.1")}
	for _, tc := range []struct {
		name   string
		ip     string
		local  bool
		client net.HardwareAddr
		want   bool
	}{
		{"ARP: another host owns it", "10.99.0.120", true, stranger, true},
		{"ARP: nobody has it", "10.99.0.121", true, stranger, false},
		// The declining client answering for the address itself
		// proves nothing.
		{"ARP: only the declining client answers", "10.99.0.120", true, ownerMAC, false},
		{"ICMP: a host behind the relay owns it", "10.98.0.50", false, stranger, true},
		{"ICMP: nobody has it", "10.98.0.51", false, stranger, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bool
			var perr error
			start := time.Now()
			inNetns(t, lab.Srv, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
				defer cancel()
				got, perr = p.InUse(ctx, netip.MustParseAddr(tc.ip), tc.local, tc.client)
			})
			if perr != nil {
				t.Fatal(perr)
			}
			if got != tc.want {
				t.Fatalf("InUse(%s) = %v, want %v", tc.ip, got, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the probe took %s, past its deadline", d)
			}
		})
	}
}

// The pool-draining flood with a real client: perfdhcp in its own
// namespace, as one relay (giaddr 10.98.0.2), brings 103 new clients at
// once to a pool of 51. With a budget of 10 (and 1/s), at most a few more
// than 10 get an address; before the budget every address went.
func TestFloodFromPerfdhcpKeepsThePool(t *testing.T) {
	netlab.Require(t, "perfdhcp")
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Srv, "addr", "add", "10.98.0.1/24", "dev", "srv0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.98.0.2/24", "dev", "cli0")
	cli := etcdtest.Start(t)
	pool := config.Pool{Subnet: netip.MustParsePrefix("10.98.0.0/24"),
		Range:     config.Range{Start: addr("10.98.0.10"), End: addr("10.98.0.60")},
		LeaseTime: time.Hour}
	o := Options{Interface: "srv0", Port: 67, ServerIP: addr("10.99.0.1"), Advertise: addr("10.99.0.1"),
		Pools: []config.Pool{pool}, Policy: Policy{BIOS: "undionly.kpxe", ScriptURL: scriptURL}, Replica: "ns",
		Leases: lease.NewStore(cli, state.Keys{Prefix: prefix}, 3*time.Second),
		Limits: config.DHCP{NewClientsPerSecond: 1, NewClientsBurst: 10, Relays: []netip.Addr{addr("10.98.0.2")}},
		Log:    testLogger(t)}
	srv := New(o)
	var err error
	inNetns(t, lab.Srv, func() { err = srv.Listen() }) // the socket stays in the namespace
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	campaign(t, cli, srv, "ns")
	waitFor(t, 15*time.Second, "server leads", srv.Leading)

	out, _ := lab.Run(60*time.Second, lab.Cli, "perfdhcp", "-4", "-l", "10.98.0.2", "-r", "200", "-R", "103", "-n", "103",
		"-p", "4", "-o", "93,0000", "-o", "60,505845436c69656e74", "10.99.0.1")
	t.Logf("perfdhcp:\n%s", out)
	acks := leaseCount(t, cli)
	_, free := srv.term.Load().pools[0].stats(time.Now())
	t.Logf("%d leases in etcd, %d of 51 addresses free", acks, free)
	if acks > 10+6 || acks < 1 {
		t.Fatalf("%d leases from a flood of 103 new clients with a budget of 10 (+1/s)", acks)
	}
	if got := counter(t, srv.metrics.ignored, "new_client_budget"); got < 50 {
		t.Fatalf("new_client_budget = %v", got)
	}
}
