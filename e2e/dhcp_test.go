package e2e

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/pkg/state"
)

// udhcpc asks for a lease from the client namespace posing as the firmware
// the extra arguments describe, and returns what the server answered (the
// variables udhcpc hands its script), or nil if nobody answered.
func udhcpc(t *testing.T, lab *netlab.TLab, mac string, args ...string) map[string]string {
	t.Helper()
	lab.SetClientMAC(mac)
	dir := t.TempDir()
	out := filepath.Join(dir, "lease.env")
	script := filepath.Join(dir, "script.sh")
	writeFile(t, script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+out+"\nexit 0\n"))
	os.Chmod(script, 0o755)
	base := []string{"udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1", "-s", script}
	res, _ := lab.Run(20*time.Second, lab.Cli, "busybox", append(base, args...)...)
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

func inPool(ip string) bool {
	return regexp.MustCompile(`^10\.99\.0\.1\d\d$`).MatchString(ip)
}

func TestDHCPAndTFTPWithRealClients(t *testing.T) {
	netlab.Require(t, "busybox", "curl", "atftp", "perfdhcp")
	lab := netlab.NewT(t, "10.99.0.1/24")
	// The relay network perfdhcp sends from (it always acts as a relay).
	lab.MustIP("-n", lab.Srv, "addr", "add", "10.98.0.1/16", "dev", "srv0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.98.0.2/16", "dev", "cli0")
	// For HTTP and TFTP from the client side; outside every range.
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.250/24", "dev", "cli0")
	// A secret template variable: it must never reach the log.
	r := startReplica(t, lab, lab.Srv, replicaOptions{vars: map[string]string{"root_password_hash": "s3cr3t-hash-value"},
		extra: "  secret_template_vars: [root_password_hash]\n"})
	r.waitLog(t, "answering DHCP", 30*time.Second)

	t.Run("BIOS PXE gets undionly.kpxe and next-server", func(t *testing.T) {
		env := udhcpc(t, lab, "52:54:00:00:01:01", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
		if env == nil || env["boot_file"] != "undionly.kpxe" || env["siaddr"] != "10.99.0.1" || !inPool(env["ip"]) {
			t.Fatalf("answer: %v", env)
		}
		if env["serverid"] != "10.99.0.1" || env["router"] != "10.99.0.1" || env["subnet"] != "255.255.255.0" || env["lease"] != "600" {
			t.Fatalf("options: %v", env)
		}
	})
	t.Run("UEFI PXE gets ipxe.efi", func(t *testing.T) {
		env := udhcpc(t, lab, "52:54:00:00:01:02", "-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
		if env == nil || env["boot_file"] != "ipxe.efi" || env["siaddr"] != "10.99.0.1" {
			t.Fatalf("answer: %v", env)
		}
	})
	t.Run("iPXE gets the script URL", func(t *testing.T) {
		env := udhcpc(t, lab, "52:54:00:00:01:03", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845")
		if env == nil || env["boot_file"] != "http://10.99.0.1:4081/boot.ipxe" {
			t.Fatalf("answer: %v", env)
		}
	})
	t.Run("UEFI HTTP boot gets an http URL", func(t *testing.T) {
		env := udhcpc(t, lab, "52:54:00:00:01:04", "-V", "HTTPClient:Arch:00016:UNDI:003000", "-x", "0x5d:0010")
		if env == nil || env["boot_file"] != "http://10.99.0.1:4081/tftp/ipxe.efi" {
			t.Fatalf("answer: %v", env)
		}
	})
	t.Run("a plain client gets an address and no boot file", func(t *testing.T) {
		env := udhcpc(t, lab, "52:54:00:00:01:05")
		if env == nil || !inPool(env["ip"]) || env["boot_file"] != "" {
			t.Fatalf("answer: %v", env)
		}
	})
	t.Run("the same MAC gets the same address again", func(t *testing.T) {
		a := udhcpc(t, lab, "52:54:00:00:01:06")
		b := udhcpc(t, lab, "52:54:00:00:01:06")
		if a == nil || b == nil || a["ip"] != b["ip"] {
			t.Fatalf("%v then %v", a, b)
		}
	})

	t.Run("an installed machine gets no answer, another MAC does", func(t *testing.T) {
		const mac = "52:54:00:00:02:01"
		installMachine(t, lab, "INSTALLED-1", mac)
		// The leader learns of it through its etcd watch, usually within
		// milliseconds: asked again until 10 s have passed.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			env := udhcpc(t, lab, mac, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
			if env == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("installed machine still got an answer after 10 s: %v", env)
			}
		}
		if env := udhcpc(t, lab, mac, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845"); env != nil {
			t.Fatalf("installed machine's iPXE got an answer: %v", env)
		}
		if env := udhcpc(t, lab, "52:54:00:00:02:02", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"); env == nil {
			t.Fatal("another machine got no answer")
		}
	})

	t.Run("TFTP serves undionly.kpxe byte for byte with blksize 1468", func(t *testing.T) {
		got := filepath.Join(t.TempDir(), "undionly.kpxe")
		if out, err := lab.Run(20*time.Second, lab.Cli, "curl", "-sS", "--tftp-blksize", "1468", "-o", got, "tftp://10.99.0.1/undionly.kpxe"); err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
		want, _ := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
		data, _ := os.ReadFile(got)
		if string(data) != string(want) {
			t.Fatalf("got %d bytes, want %d", len(data), len(want))
		}
		got2 := filepath.Join(t.TempDir(), "undionly.kpxe")
		if out, err := lab.Run(20*time.Second, lab.Cli, "atftp", "--option", "blksize 1468", "-g", "-r", "undionly.kpxe", "-l", got2, "10.99.0.1"); err != nil {
			t.Fatalf("atftp: %v %s", err, out)
		}
		if data, _ := os.ReadFile(got2); string(data) != string(want) {
			t.Fatal("atftp got other bytes")
		}
	})
	t.Run("TFTP refuses names outside the directory and missing files", func(t *testing.T) {
		for _, name := range []string{"../../etc/passwd", "/../../../etc/passwd", "nonexistent.efi"} {
			start := time.Now()
			dst := filepath.Join(t.TempDir(), "x")
			out, err := lab.Run(20*time.Second, lab.Cli, "atftp", "-g", "-r", name, "-l", dst, "10.99.0.1")
			if err == nil {
				t.Errorf("atftp %s succeeded: %s", name, out)
			}
			if data, _ := os.ReadFile(dst); strings.Contains(string(data), "root:") {
				t.Fatalf("served %s", name)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("atftp %s took %s: an error should come at once", name, d)
			}
		}
	})

	// The ACKs perfdhcp saw (it passes with 990 of 1000): every one was
	// a DISCOVER received, an OFFER and an ACK sent, a lease written.
	perfACKs := 990
	t.Run("perfdhcp completes 1000 relayed exchanges with unique addresses, all in etcd", func(t *testing.T) {
		out, err := lab.Run(120*time.Second, lab.Cli, "perfdhcp", "-4", "-l", "10.98.0.2", "-r", "100", "-R", "1000", "-n", "1000", "-p", "60", "10.99.0.1")
		t.Logf("perfdhcp:\n%s", tail(out, 25))
		if err != nil && !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("perfdhcp: %v", err)
		}
		acks := statLine(t, out, "REQUEST-ACK", "received packets")
		leases := leasesIn(t, r, "10.98.")
		macs := map[string]string{}
		for ip, l := range leases {
			if other, ok := macs[l.MAC]; ok {
				t.Fatalf("MAC %s holds %s and %s", l.MAC, other, ip)
			}
			macs[l.MAC] = ip
		}
		t.Logf("%d ACKs received, %d leases in etcd from %d MACs", acks, len(leases), len(macs))
		if acks < 990 || len(leases) < acks {
			t.Fatalf("%d ACKs, %d leases in etcd", acks, len(leases))
		}
		perfACKs = acks
	})

	t.Run("the metrics moved as they should", func(t *testing.T) { checkMetrics(t, lab, perfACKs) })
	t.Run("every key in etcd is one docs/etcd.md documents", func(t *testing.T) {
		keys := state.Keys{Prefix: "/mayu/"}
		n := 0
		for _, key := range strings.Fields(r.etcdctl(t, "get", "--prefix", "/mayu/", "--keys-only")) {
			n++
			if !keys.Match(key) {
				t.Errorf("key %s is not in the schema (pkg/state, docs/etcd.md)", key)
			}
		}
		if n < 1000 {
			t.Fatalf("only %d keys under /mayu/", n)
		}
	})

	t.Run("no secret is ever logged", func(t *testing.T) {
		secret := r.etcdctl(t, "get", "/mayu/cluster/secret", "--print-value-only")
		secret = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(secret), `{"secret":"`), `"}`)
		log := r.log.String()
		for what, s := range map[string]string{"node token": installedToken, "cluster secret": secret, "secret template variable": "s3cr3t-hash-value"} {
			if len(s) < 8 {
				t.Fatalf("no %s to look for: %q", what, s)
			}
			if strings.Contains(log, s) {
				t.Errorf("the log contains the %s", what)
			}
		}
		if !strings.Contains(log, `level=DEBUG msg="dhcp: offer"`) || !strings.Contains(log, `msg="machine state changed" id=installed-1 mac=52:54:00:00:02:01 state=installed replica=r1`) {
			t.Error("the log lacks DHCP decisions or state changes")
		}
	})
}

type leaseValue struct {
	IP     string `json:"ip"`
	MAC    string `json:"mac"`
	Leader string `json:"leader"` // the replica that wrote it
}

// leasesIn reads the leases in etcd whose address starts with prefix.
func leasesIn(t *testing.T, r *replica, prefix string) map[string]leaseValue {
	t.Helper()
	out := r.etcdctl(t, "get", "--prefix", "/mayu/leases/"+prefix, "--print-value-only")
	leases := map[string]leaseValue{}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var l leaseValue
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("lease %q: %v", line, err)
		}
		if _, dup := leases[l.IP]; dup {
			t.Fatalf("address %s twice", l.IP)
		}
		leases[l.IP] = l
	}
	return leases
}

// statLine reads one counter of perfdhcp's per-exchange statistics.
func statLine(t *testing.T, out, exchange, counter string) int {
	t.Helper()
	_, section, ok := strings.Cut(out, exchange)
	if !ok {
		t.Fatalf("perfdhcp printed no %s statistics", exchange)
	}
	m := regexp.MustCompile(regexp.QuoteMeta(counter) + `: (\d+)`).FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("perfdhcp printed no %q", counter)
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

// installedToken is the node token installMachine last used.
var installedToken string

// installMachine walks a machine through the HTTP flow from the client
// namespace until it is installed, as its installer would.
func installMachine(t *testing.T, lab *netlab.TLab, serial, mac string) {
	t.Helper()
	script, err := curl(t, lab, fmt.Sprintf("http://10.99.0.1:4081/ipxe?serial=%s&mac=%s", hex.EncodeToString([]byte(serial)), mac))
	if err != nil {
		t.Fatal(err, script)
	}
	m := regexp.MustCompile(`mayu\.first_stage=(\S+)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no installer script:\n%s", script)
	}
	installedToken = regexp.MustCompile(`mayu\.token=(\S+)`).FindStringSubmatch(script)[1]
	fs, err := curl(t, lab, "-f", m[1])
	if err != nil {
		t.Fatal(err, fs)
	}
	installed := regexp.MustCompile(`'(http://[^']*/installed\?token=[^']*)'`).FindStringSubmatch(fs)
	if out, err := curl(t, lab, "-f", "-X", "POST", installed[1]); err != nil {
		t.Fatal(err, out)
	}
}

// scrape reads a replica's /metrics from its namespace: sample values by
// `name{labels}` as exposed, and the promlint problems of the exposition.
func scrape(t *testing.T, lab *netlab.TLab, ns string) (map[string]float64, []promlint.Problem) {
	t.Helper()
	out, err := lab.Run(10*time.Second, ns, "curl", "-sf", "http://127.0.0.1:4082/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	problems, err := promlint.New(strings.NewReader(out)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		fmt.Sscan(line[i+1:], &v)
		samples[line[:i]] = v
	}
	return samples, problems
}

// checkMetrics asserts that the flows of TestDHCPAndTFTPWithRealClients
// moved the counters an operator watches; perfdhcp saw acks ACKs.
func checkMetrics(t *testing.T, lab *netlab.TLab, acks int) {
	samples, problems := scrape(t, lab, lab.Srv)
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "mayu_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	for _, c := range []struct {
		sample string
		min    float64
	}{
		{`mayu_leader`, 1},
		{`mayu_dhcp_packets_received_total{type="discover"}`, float64(acks)},
		{`mayu_dhcp_packets_answered_total{type="offer"}`, float64(acks)},
		{`mayu_dhcp_packets_answered_total{type="ack"}`, float64(acks)},
		{`mayu_dhcp_packets_ignored_total{reason="installed"}`, 1},
		{`mayu_dhcp_leases_active{pool="10.98.0.0/16"}`, 990},
		{`mayu_dhcp_addresses_free{pool="10.99.0.0/24"}`, 80},
		{`mayu_dhcp_lease_write_duration_seconds_count`, float64(acks)},
		{`mayu_tftp_transfers_total{result="ok"}`, 2},
		{`mayu_tftp_transfers_total{result="refused"}`, 1},
		{`mayu_tftp_transfers_total{result="not_found"}`, 1},
		{`mayu_tftp_sent_bytes_total`, 2 * 74000},
		{`mayu_http_requests_total{code="200",route="/ipxe"}`, 1},
		{`mayu_http_requests_total{code="200",route="/machines/{id}/installed"}`, 1},
		{`mayu_registrations_total`, 1},
		{`mayu_installs_completed_total`, 1},
		{`mayu_machines{profile="default",state="installed"}`, 1},
		// Lease writes of concurrent ACKs are grouped into one Txn under
		// load: fewer Txns than ACKs.
		{`mayu_etcd_request_duration_seconds_count{method="Txn"}`, 100},
		{`mayu_config_matches_leader`, 1},
	} {
		if v, ok := samples[c.sample]; !ok || v < c.min {
			t.Errorf("%s = %v (present %v), want at least %v", c.sample, v, ok, c.min)
		}
	}
}
