// Command dhcpprobe measures DHCP service availability from a client's
// side, for failover tests and benchmarks. Every -every it performs one full
// DISCOVER→OFFER→REQUEST→ACK exchange on an interface, cycling through
// -macs client MACs 02:00:00:00:<hi>:<lo> starting at index -mac-base, and
// logs one line per attempt (see package internal/dhcpprobe for the format
// and for the functions that analyse it):
//
//	<unix_ms_start> <unix_ms_end> ok <mac> <ip> <server_id>
//	<unix_ms_start> <unix_ms_end> fail <mac> <reason>
//
// With -renew, every other exchange of a MAC that holds an address is a
// lone REQUEST for it (INIT-REBOOT), logged the same way.
//
// Attempts never overlap: one taking longer than the interval delays the
// next, which then starts right away. Each attempt is bounded by -timeout
// and nothing is retransmitted within it. On SIGINT/SIGTERM or after
// -duration the attempt in flight finishes, a summary goes to stderr and the
// command exits 0.
//
// It uses a raw packet socket, so it needs root (CAP_NET_RAW); run it in the
// client's network namespace, e.g.
//
//	ip netns exec cli dhcpprobe -i cli0 -every 50ms -duration 60s -macs 16 -out probe.log
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
)

type options struct {
	iface    string
	every    time.Duration
	duration time.Duration
	macs     int
	macBase  int
	timeout  time.Duration
	out      string
	cfg      dhcpprobe.Config
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("dhcpprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.iface, "i", "", "interface to probe on (required)")
	fs.DurationVar(&o.every, "every", 100*time.Millisecond, "interval between attempt starts")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	fs.IntVar(&o.macs, "macs", 16, "number of client MACs to cycle through")
	fs.IntVar(&o.macBase, "mac-base", 0, "index of the first MAC (02:00:00:00:<hi>:<lo>); give concurrent probers disjoint ranges")
	fs.DurationVar(&o.timeout, "timeout", dhcpprobe.DefaultTimeout, "bound on one whole exchange, DISCOVER to ACK")
	fs.StringVar(&o.out, "out", "", "log file (truncated); empty: stdout")
	fs.StringVar(&o.cfg.Vendor, "vendor", "", "vendor class identifier (option 60) to send; empty: none")
	fs.IntVar(&o.cfg.Arch, "arch", -1, "client system architecture (option 93) to send; -1: none")
	fs.BoolVar(&o.cfg.Release, "release", false, "send a RELEASE after each ACK")
	fs.BoolVar(&o.cfg.Renew, "renew", false, "every other exchange of a MAC holding an address is a lone REQUEST for it (INIT-REBOOT), as a client verifying its lease")
	fs.BoolVar(&o.cfg.Broadcast, "broadcast", true, "set the BROADCAST flag so servers broadcast their replies")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: dhcpprobe -i IFACE [flags]\n\n"+
			"Performs a DHCP exchange every -every and logs one line per attempt:\n"+
			"  <unix_ms_start> <unix_ms_end> ok <mac> <ip> <server_id>\n"+
			"  <unix_ms_start> <unix_ms_end> fail <mac> <reason>\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case o.iface == "":
		return o, errors.New("-i is required")
	case o.every <= 0:
		return o, errors.New("-every must be positive")
	case o.timeout <= 0:
		return o, errors.New("-timeout must be positive")
	case o.duration < 0:
		return o, errors.New("-duration must not be negative")
	case o.macs < 1:
		return o, errors.New("-macs must be at least 1")
	case o.macBase < 0 || o.macBase+o.macs > 1<<16:
		return o, errors.New("-mac-base and -macs must stay within indexes 0..65535")
	case o.cfg.Arch < -1 || o.cfg.Arch > 0xffff:
		return o, errors.New("-arch must be -1 or 0..65535")
	}
	o.cfg.Timeout = o.timeout
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhcpprobe:", err)
		os.Exit(2)
	}
	if err := probe(o); err != nil {
		fmt.Fprintln(os.Stderr, "dhcpprobe:", err)
		os.Exit(1)
	}
}

func probe(o options) error {
	conn, err := dhcpprobe.ListenRaw(o.iface)
	if err != nil {
		return fmt.Errorf("opening %s: %w", o.iface, err)
	}
	defer conn.Close()
	p := dhcpprobe.NewProber(conn, o.cfg)

	w := os.Stdout
	if o.out != "" {
		if w, err = os.Create(o.out); err != nil {
			return err
		}
		defer w.Close() // after an error; the normal path closes below
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	sum, err := run(ctx, o, p.Exchange, w)
	fmt.Fprintf(os.Stderr, "dhcpprobe: %s\n", sum)
	if err != nil {
		return err
	}
	if w != os.Stdout {
		return w.Close() // reports a failed final write-back
	}
	return nil
}

type exchangeFunc func(ctx context.Context, mac net.HardwareAddr) dhcpprobe.Result

// run performs attempts until ctx is done, writing each as one line to w
// with a single Write (so nothing is left to flush, and a reader tailing w
// sees whole lines). An attempt in flight when ctx ends is completed and
// logged: cutting it short would log a failure the server did not cause.
func run(ctx context.Context, o options, exchange exchangeFunc, w io.Writer) (dhcpprobe.Summary, error) {
	var (
		rs    []dhcpprobe.Result
		line  []byte
		timer = time.NewTimer(0)
		next  = time.Now()
	)
	defer timer.Stop()
	attempts := context.WithoutCancel(ctx)
	for i := 0; ctx.Err() == nil; i++ {
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return dhcpprobe.Summarize(rs), nil
			case <-timer.C:
			}
		}
		mac := dhcpprobe.MAC(o.macBase + i%o.macs)
		r := exchange(attempts, mac)
		rs = append(rs, r)
		line = r.AppendLine(line[:0])
		if _, err := w.Write(line); err != nil {
			return dhcpprobe.Summarize(rs), fmt.Errorf("writing log: %w", err)
		}
		// Keep to the schedule, but never overlap: a late attempt pushes
		// the next one to right now.
		next = r.Start.Add(o.every)
	}
	return dhcpprobe.Summarize(rs), nil
}
