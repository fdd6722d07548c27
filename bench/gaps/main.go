// Command gaps reads a dhcpprobe log and a list of events (a leader killed
// at a time) and prints, for each event, the DHCP gap the prober saw
// around it, then the median and maximum per kind of event. bench/failover.sh
// runs it; the gaps are internal/dhcpprobe's (a gap runs from the end of
// the last answered exchange before the failures to the start of the first
// answered one after them).
//
//	gaps -log probe.log -events events.txt
//
// An events file has one line per event: <unix_ms> <kind> (e.g. "kill-9").
// An event that no failed attempt follows has a gap of 0: the prober,
// asking every 50 ms, never went unanswered.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
)

// Event is one disruption.
type Event struct {
	At   time.Time
	Kind string
}

// window is how long after an event a gap may start and still be its.
const window = 10 * time.Second

func parseEvents(r io.Reader) ([]Event, error) {
	var evs []Event
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("events line %d: want <unix_ms> <kind>", n)
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("events line %d: %w", n, err)
		}
		evs = append(evs, Event{At: time.UnixMilli(ms), Kind: f[1]})
	}
	return evs, sc.Err()
}

// GapAt is the gap an event caused: the first gap that ends after the
// event and whose first failed attempt starts before the event's window
// closes and before the next event; 0 if there is none. A gap runs from
// the last answer, which may come a few ms before the next event is
// logged: judged by that, the next event's gap would count for this one
// too when this one caused none.
func GapAt(gaps []dhcpprobe.Gap, ev Event, next time.Time) time.Duration {
	for _, g := range gaps {
		if !g.End.After(ev.At) {
			continue
		}
		failed := g.FirstFailed
		if failed.IsZero() {
			failed = g.Start
		}
		if failed.After(ev.At.Add(window)) || (!next.IsZero() && !failed.Before(next)) {
			return 0
		}
		return g.Duration
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func run(logPath, eventsPath string, w io.Writer) error {
	lf, err := os.Open(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	rs, err := dhcpprobe.ParseLog(lf)
	if err != nil {
		return err
	}
	ef, err := os.Open(eventsPath)
	if err != nil {
		return err
	}
	defer ef.Close()
	evs, err := parseEvents(ef)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return errors.New("no events")
	}
	gaps := dhcpprobe.Gaps(rs)
	byKind := map[string][]time.Duration{}
	var kinds []string
	for i, ev := range evs {
		var next time.Time
		if i+1 < len(evs) {
			next = evs[i+1].At
		}
		g := GapAt(gaps, ev, next)
		if _, ok := byKind[ev.Kind]; !ok {
			kinds = append(kinds, ev.Kind)
		}
		byKind[ev.Kind] = append(byKind[ev.Kind], g)
		fmt.Fprintf(w, "event %s %s gap %.3f\n", ev.At.UTC().Format("15:04:05.000"), ev.Kind, g.Seconds())
	}
	for _, k := range kinds {
		ds := byKind[k]
		fmt.Fprintf(w, "summary %s n=%d median=%.3f max=%.3f\n", k, len(ds), median(ds).Seconds(), slices.Max(ds).Seconds())
	}
	if err := dhcpprobe.CheckUnique(rs); err != nil {
		fmt.Fprintf(w, "conflict %v\n", err)
	}
	return nil
}

func main() {
	logPath := flag.String("log", "", "dhcpprobe log")
	eventsPath := flag.String("events", "", "events file: <unix_ms> <kind> per line")
	flag.Parse()
	if *logPath == "" || *eventsPath == "" {
		fmt.Fprintln(os.Stderr, "usage: gaps -log probe.log -events events.txt")
		os.Exit(2)
	}
	if err := run(*logPath, *eventsPath, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gaps:", err)
		os.Exit(1)
	}
}
