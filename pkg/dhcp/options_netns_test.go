package dhcp

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

// udhcpcLease runs busybox udhcpc in the client namespace as mac, asking
// (with -o) for exactly the options given, and returns the variables it
// hands its script on "bound", nil if it got no lease.
func udhcpcLease(t *testing.T, lab *netlab.TLab, mac string, options ...string) map[string]string {
	t.Helper()
	lab.SetClientMAC(mac)
	dir := t.TempDir()
	out := filepath.Join(dir, "lease.env")
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+out+"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1", "-s", script, "-o"}
	for _, o := range options {
		args = append(args, "-O", o)
	}
	res, _ := lab.Run(20*time.Second, lab.Cli, "busybox", args...)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Logf("udhcpc %s: no lease\n%s", mac, res)
		return nil
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// A real DHCP client on a real segment gets the pool's options it asks
// for, and no others; its reserved address, durably.
func TestPoolOptionsReachARealClient(t *testing.T) {
	netlab.Require(t, "busybox")
	lab := netlab.NewT(t, "10.99.0.1/24")
	cli := etcdtest.Start(t)
	const reservedMAC = "52:54:00:00:0e:01"
	pool := config.Pool{Subnet: netip.MustParsePrefix("10.99.0.0/24"),
		Range:  config.Range{Start: addr("10.99.0.100"), End: addr("10.99.0.199")},
		Router: addr("10.99.0.1"), LeaseTime: time.Hour,
		DomainName: "lab.example.com", DomainSearch: []string{"lab.example.com", "example.com"},
		NTP: []netip.Addr{addr("10.99.0.123")}, MTU: 1400,
		Options: []config.DHCPOption{
			{Code: 224, Type: config.OptionHex, Value: config.OptionValue{"01:02:03"}},
			{Code: 225, Type: config.OptionString, Value: config.OptionValue{"always here"}, Always: true},
		},
		Reservations: []config.Reservation{{MAC: reservedMAC, Address: addr("10.99.0.70")}},
	}
	srv := New(Options{Interface: "srv0", Port: 67, ServerIP: addr("10.99.0.1"), Advertise: addr("10.99.0.1"),
		Pools: []config.Pool{pool}, Replica: "ns", Leases: lease.NewStore(cli, state.Keys{Prefix: prefix}, 3*time.Second),
		Log: testLogger(t)})
	var err error
	inNetns(t, lab.Srv, func() { err = srv.Listen() })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	campaign(t, cli, srv, "ns")
	waitFor(t, 15*time.Second, "server leads", srv.Leading)

	env := udhcpcLease(t, lab, reservedMAC, "domain", "ntpsrv")
	if env == nil {
		t.Fatal("the reserved MAC got no lease")
	}
	if env["ip"] != "10.99.0.70" || env["domain"] != "lab.example.com" || env["ntpsrv"] != "10.99.0.123" {
		t.Errorf("reserved client: %v", env)
	}
	if _, ok := env["mtu"]; ok {
		t.Errorf("mtu sent unasked: %v", env)
	}
	if _, ok := env["search"]; ok {
		t.Errorf("search list sent unasked: %v", env)
	}
	if l, _, ok := storedLease(t, cli, []byte{10, 99, 0, 70}); !ok || l.MAC != reservedMAC {
		t.Errorf("reserved lease in etcd: %+v %v", l, ok)
	}

	env = udhcpcLease(t, lab, "52:54:00:00:0e:02", "mtu", "search", "224")
	if env == nil {
		t.Fatal("another MAC got no lease")
	}
	if !inRange(pool, []byte(netip.MustParseAddr(env["ip"]).AsSlice())) || env["mtu"] != "1400" ||
		env["search"] != "lab.example.com example.com" || env["opt224"] != "010203" {
		t.Errorf("other client: %v", env)
	}
	if _, ok := env["domain"]; ok {
		t.Errorf("domain sent unasked: %v", env)
	}
	// Option 225 is marked always: sent though nobody asked for it.
	if env["opt225"] != "616c776179732068657265" { // "always here"
		t.Errorf("option 225 (always) not received: %v", env)
	}
}
