package server

import (
	"net"
	"strconv"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
)

// dhcpPolicy is the boot decision's configuration, the same for the
// running leader and for `mayu -check`.
func dhcpPolicy(cl config.Cluster, mayuURL string) dhcp.Policy {
	return dhcp.Policy{
		BIOS: cl.Boot.BIOS, EFI64: cl.Boot.EFI64, EFI32: cl.Boot.EFI32, ARM64: cl.Boot.ARM64,
		ScriptURL: mayuURL + "/boot.ipxe", HTTPBase: mayuURL + "/tftp/",
		AnswerInstalledIPXE: cl.Boot.AnswerInstalledIPXE,
	}
}

// PreviewDHCP is, for each pool and each kind of boot client, the OFFER
// this configuration makes the leader send (dhcp.PreviewOffers), with
// node.advertise_address standing in for the leader's own address.
func PreviewDHCP(cfg *config.Config) [][]dhcp.Preview {
	n := cfg.Node
	mayuURL := "http://" + net.JoinHostPort(n.AdvertiseAddress.String(), strconv.Itoa(n.Ports.HTTP))
	return dhcp.PreviewOffers(dhcp.Options{
		ServerIP: n.AdvertiseAddress, Advertise: n.AdvertiseAddress, Pools: cfg.Cluster.Pools,
		Policy: dhcpPolicy(cfg.Cluster, mayuURL), Replica: n.Name, Limits: cfg.Cluster.DHCP,
	})
}
