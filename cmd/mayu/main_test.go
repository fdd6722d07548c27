package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/fixture"
)

// checkOutput runs `mayu -check` on the lab's config with poolExtra in
// its pool, and returns what it printed.
func checkOutput(t *testing.T, poolExtra string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "check-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The lab's segment, so that the pool and the advertise address fit.
	c.Advertise, c.Listen, c.PoolExtra = "10.99.0.1", "", poolExtra
	path, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := run([]string{"-config", path, "-check"}, &out)
	return out.String(), code
}

// -check shows, per kind of client, the options the leader's own reply
// code puts in its OFFER: requested ones only, the boot file by
// architecture, what is not sent and why.
func TestCheckShowsTheOffers(t *testing.T) {
	out, code := checkOutput(t, `      domain_name: lab.example.com
      domain_search: [lab.example.com, example.com]
      ntp: [10.99.0.1]
      mtu: 1500
      options:
        - {code: 252, type: string, value: "http://10.99.0.1/wpad.dat", always: true}
        - {code: 2, type: uint32, value: 3600}
      reservations:
        - {mac: "52:54:00:12:34:56", address: 10.99.0.70}
`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	t.Logf("%s", out)
	section := func(client string) string {
		_, rest, ok := strings.Cut(out, "mayu:   "+client+":")
		if !ok {
			t.Fatalf("no section for %s in:\n%s", client, out)
		}
		if i := regexp.MustCompile(`\nmayu: {3}\S`).FindStringIndex(rest); i != nil {
			rest = rest[:i[0]]
		}
		return rest
	}
	for _, tc := range []struct {
		client     string
		want, dont []string
	}{
		{"BIOS PXE (arch 0)",
			[]string{`file "undionly.kpxe"`, "1 Subnet Mask: 255.255.255.0", `15 Domain Name: "lab.example.com"`, "2 Time Offset: 3600",
				`252 option: "http://10.99.0.1/wpad.dat"`, "not sent: 42 (ntp): not requested", "not sent: 26 (mtu): not requested",
				"not sent: 119 (domain_search): not requested", "54 Server Identifier: 10.99.0.1"},
			[]string{"42 NTP", "175"}},
		{"UEFI x64 PXE (arch 7)",
			[]string{`file "ipxe.efi"`, "42 NTP Servers: 10.99.0.1", `15 Domain Name: "lab.example.com"`},
			[]string{"26 Interface MTU", "119 "}},
		{"UEFI x64 HTTP boot (arch 16)",
			[]string{"/tftp/ipxe.efi\"", `60 Class Identifier: HTTPClient`, "42 NTP Servers: 10.99.0.1"},
			nil},
		{"iPXE",
			[]string{"/boot.ipxe\"", "26 Interface MTU: 1500", "119 DNS Domain Search List: lab.example.com, example.com",
				"175 ", "not sent: 42 (ntp): not requested", "not sent: 2 (options[1]): not requested"},
			[]string{"2 Time Offset"}},
	} {
		s := section(tc.client)
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: no %q in:\n%s", tc.client, w, s)
			}
		}
		for _, d := range tc.dont {
			if strings.Contains(s, "mayu:     "+d) {
				t.Errorf("%s: %q, which it does not ask for, in:\n%s", tc.client, d, s)
			}
		}
	}
}
