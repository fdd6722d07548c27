package admin

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/replica"
)

// The wire types moved to pkg/api with their own Lease and Replica; what
// the API sends must stay byte for byte what it sent when they embedded
// lease.Lease and replica.Info.
func TestWireFormatUnchanged(t *testing.T) {
	at := time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC)
	for _, hostname := range []string{"", "pxe-1"} {
		l := lease.Lease{IP: netip.MustParseAddr("10.0.0.5"), MAC: "52:54:00:00:00:01", Expiry: at, Hostname: hostname, Leader: "r1"}
		for _, owner := range []string{"", "sn-1"} {
			old := struct {
				lease.Lease
				Machine string `json:"machine,omitempty"`
				Expired bool   `json:"expired"`
			}{l, owner, true}
			same(t, old, leaseView(l, owner, true))
		}
	}
	i := replica.Info{Name: "a", Version: "v1", ConfigHash: "h", Advertise: "10.0.0.1", HTTP: ":4081", Admin: ":4080",
		Metrics: ":9100", DHCP: true, Started: at}
	old := struct {
		replica.Info
		Leader        bool `json:"leader"`
		ConfigMatches bool `json:"configMatches"`
	}{i, true, false}
	same(t, old, replicaView(i, true, false, nil))
}

func same(t *testing.T, old, now any) {
	t.Helper()
	a, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(now)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("wire format changed:\n was %s\n now %s", a, b)
	}
}
