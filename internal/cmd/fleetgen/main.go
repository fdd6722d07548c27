// Command fleetgen fills an etcd with a fleet for benchmarks: machine
// records and DHCP leases in mayu's key format (internal/fleet), written
// by transactions directly. bench/fleet.sh uses it; so can anyone who
// wants to see mayu at fleet scale:
//
//	bin/fleetgen -endpoints 127.0.0.1:2379 -machines 20000 -leases 100000
//
// Machines get 10.64.0.1 upwards, leases 10.128.0.1 upwards: point a
// replica's cluster.static.range and pool at ranges that hold them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/fleet"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	prefix := flag.String("prefix", "/mayu/", "mayu's key prefix (node.etcd.prefix)")
	machines := flag.Int("machines", 20000, "machine records")
	leases := flag.Int("leases", 100000, "DHCP leases")
	workers := flag.Int("workers", 4, "transactions in flight")
	flag.Parse()
	if !strings.HasSuffix(*prefix, "/") {
		fmt.Fprintln(os.Stderr, "fleetgen: -prefix must end in /")
		os.Exit(2)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetgen:", err)
		os.Exit(1)
	}
	defer cli.Close()
	start := time.Now()
	n := max(*machines, *leases, 1)
	err = fleet.Fill(context.Background(), cli, fleet.Options{Prefix: *prefix, Cluster: fleet.Cluster(n), Machines: *machines,
		Leases: *leases, Pool: fleet.Pool(n), Workers: *workers})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetgen:", err)
		os.Exit(1)
	}
	fmt.Printf("fleetgen: %d machines and %d leases under %s in %v\n", *machines, *leases, *prefix, time.Since(start).Round(time.Millisecond))
}
