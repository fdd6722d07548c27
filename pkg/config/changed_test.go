package config

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestChanged(t *testing.T) {
	a := mustParse(t, baseYAML)
	b := mustParse(t, baseYAML)
	if got := Changed(a, b); len(got) != 0 {
		t.Fatalf("two loads of one file differ in %v", got)
	}
	b.Node.LogLevel = "debug"
	b.Node.Ports.HTTP++
	b.Cluster.Pools[0].Router = netip.MustParseAddr("10.99.0.254")
	if got, want := Changed(a, b), []string{"node.log_level", "node.ports", "cluster.pools"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Changed: %v, want %v", got, want)
	}
}
