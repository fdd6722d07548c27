package election

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/netlab"
)

// The leader's host loses its link while a follower keeps a connection to
// it: fresh handshakes go unanswered and the request on the kept
// connection is never acknowledged, so the probes say Unreachable (two in
// a row are a verdict, well before three timeouts). Real packets between
// two namespaces on a bridge; the cut is the leader's bridge port going
// down. The follower's probes run in a child process started in its
// namespace, since every goroutine of the probe must dial from there.
func TestProbeFindsACutLinkOnTheKeptConnection(t *testing.T) {
	if os.Getenv("MAYU_PROBE_CHILD") != "" {
		t.Skip("the child's own run")
	}
	netlab.Require(t)
	seg := netlab.NewSegmentT(t)
	leaderNS := seg.AddHost("leader", "10.77.0.1/24")
	followerNS := seg.AddHost("follower", "10.77.0.2/24")

	var ln net.Listener
	if err := netlab.InNetns(leaderNS, func() {
		var err error
		ln, err = net.Listen("tcp", "10.77.0.1:0")
		if err != nil {
			t.Errorf("listen: %v", err)
		}
	}); err != nil || ln == nil {
		t.Fatalf("listen in %s: %v", leaderNS, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leader r1 (term 42)")
	})}
	go srv.Serve(ln)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	child := exec.CommandContext(ctx, "ip", "netns", "exec", followerNS, os.Args[0],
		"-test.run=^TestProbeChild$", "-test.v")
	child.Env = append(os.Environ(), "MAYU_PROBE_CHILD=http://"+ln.Addr().String()+"/leader")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer child.Process.Kill()

	var before, after []string
	cut := false
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		o, ok := strings.CutPrefix(lines.Text(), "probe: ")
		if !ok {
			continue
		}
		if !cut {
			before = append(before, o)
			if len(before) >= 3 && o == "answered" {
				seg.MustIP("-n", seg.Switch, "link", "set", "p0", "down")
				cut = true
			}
			continue
		}
		if after = append(after, o); len(after) == 6 {
			break
		}
	}
	// The link back after about 1.5 s (shorter than an election TTL): the
	// kept connection now waits out its retransmission backoff (the next
	// try seconds away); a fresh handshake works, so the probe asks on a
	// new connection and hears the leader at once.
	seg.MustIP("-n", seg.Switch, "link", "set", "p0", "up")
	var back []string
	for lines.Scan() {
		o, ok := strings.CutPrefix(lines.Text(), "probe: ")
		if !ok {
			continue
		}
		if back = append(back, o); o == "answered" || len(back) == 6 {
			break
		}
	}
	t.Logf("before the cut: %v; after: %v; link back: %v", before, after, back)
	if len(back) == 0 || len(back) > 2 || back[len(back)-1] != "answered" {
		t.Errorf("link back: %v, want the leader heard within two probes", back)
	}
	if !cut {
		t.Fatal("the leader never answered before the cut")
	}
	if len(after) < 6 {
		t.Fatalf("the child stopped after %d probes past the cut", len(after))
	}
	// The probe under way at the cut may still have its answer; the next
	// four have none, and from the second after the cut at the latest
	// each finds no kernel.
	for i, o := range after[2:] {
		if o != "unreachable" {
			t.Errorf("probe %d after the cut: %s, want unreachable", i+3, o)
		}
	}
}

// TestProbeChild is the follower's side of the test above: it probes the
// URL in MAYU_PROBE_CHILD every 100 ms, as the probe loop does, and
// prints each outcome.
func TestProbeChild(t *testing.T) {
	url := os.Getenv("MAYU_PROBE_CHILD")
	if url == "" {
		t.Skip("run by TestProbeFindsACutLinkOnTheKeptConnection in its namespace")
	}
	probe := httpProbe(125 * time.Millisecond)
	for range 60 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		o := probe(ctx, url, 42)
		cancel()
		fmt.Printf("probe: %v\n", o)
		time.Sleep(100*time.Millisecond - min(time.Since(start), 100*time.Millisecond))
	}
}
