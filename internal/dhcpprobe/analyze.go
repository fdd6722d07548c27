package dhcpprobe

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Gap is a maximal run of failed attempts: an interval in which the prober
// got no lease.
type Gap struct {
	// Start is the end of the last successful exchange before the run, or
	// the start of the run's first attempt if no success precedes it.
	Start time.Time
	// End is the start of the first successful exchange after the run, or
	// the end of its last attempt if no success follows it.
	End      time.Time
	Duration time.Duration // End - Start (never negative)
	// FirstFailed is the start of the run's first failed attempt: what
	// follows a disruption, where Start (the last success) may precede it.
	FirstFailed time.Time
	Failures    int  // failed attempts in the run
	Leading     bool // no success before the run: it starts the log
	Trailing    bool // no success after the run: it ends the log
}

// sortedByStart returns rs ordered by start time; rs itself is untouched.
func sortedByStart(rs []Result) []Result {
	s := slices.Clone(rs)
	slices.SortStableFunc(s, func(a, b Result) int { return a.Start.Compare(b.Start) })
	return s
}

// Gaps returns the runs of failed attempts in rs, in time order. rs need not
// be sorted; it is ordered by start time first (so logs of several probers
// can be concatenated, in which case a gap is a run with no success from
// any of them).
func Gaps(rs []Result) []Gap {
	var (
		gaps   []Gap
		cur    *Gap
		lastOK time.Time
		seenOK bool
	)
	for _, r := range sortedByStart(rs) {
		if !r.OK {
			if cur == nil {
				cur = &Gap{Start: r.Start, FirstFailed: r.Start, Leading: !seenOK}
				if seenOK {
					cur.Start = lastOK
				}
			}
			cur.Failures++
			if r.End.After(cur.End) {
				cur.End = r.End
			}
			continue
		}
		if cur != nil {
			cur.End = r.Start
			gaps = append(gaps, finish(*cur))
			cur = nil
		}
		seenOK, lastOK = true, r.End
	}
	if cur != nil {
		cur.Trailing = true
		gaps = append(gaps, finish(*cur))
	}
	return gaps
}

func finish(g Gap) Gap {
	if g.End.Before(g.Start) { // only with overlapping attempts
		g.End = g.Start
	}
	g.Duration = g.End.Sub(g.Start)
	return g
}

// LongestGap is the longest Duration among Gaps(rs), 0 if there is none.
func LongestGap(rs []Result) time.Duration {
	var d time.Duration
	for _, g := range Gaps(rs) {
		d = max(d, g.Duration)
	}
	return d
}

// Holder is one value seen for a conflicting key: a MAC holding an IP in
// CheckUnique, an IP held by a MAC in CheckStable.
type Holder struct {
	Value       string
	First, Last time.Time // starts of the first and last ACK seen
	Count       int       // ACKs seen
}

// Conflict is one key seen with several values.
type Conflict struct {
	Key     string
	Holders []Holder // ordered by First
}

// ConflictError is returned by CheckUnique and CheckStable.
type ConflictError struct {
	What      string // "IP ACKed to several MACs" or "MAC ACKed several IPs"
	Conflicts []Conflict
}

// maxExamples bounds the conflicts spelled out in an error message.
const maxExamples = 5

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dhcpprobe: %d× %s:", len(e.Conflicts), e.What)
	for i, c := range e.Conflicts {
		if i == maxExamples {
			fmt.Fprintf(&b, "; and %d more", len(e.Conflicts)-i)
			break
		}
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " %s:", c.Key)
		for j, h := range c.Holders {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, " %s (%d× %s..%s)", h.Value, h.Count,
				h.First.UTC().Format("15:04:05.000"), h.Last.UTC().Format("15:04:05.000"))
		}
	}
	return b.String()
}

// CheckUnique fails if one IP was ever ACKed to two different MACs. It is
// deliberately stricter than "never at overlapping times": probers cycle
// through few MACs with long leases, so a reused address means the server
// lost track of a lease (e.g. across a failover). The error is a
// *ConflictError listing every such IP.
func CheckUnique(rs []Result) error {
	return check(rs, "IP ACKed to several MACs",
		func(r Result) string { return canonIP(r.IP) },
		func(r Result) string { return canonMAC(r.MAC) })
}

// CheckStable fails if one MAC was ever ACKed two different IPs. A client
// may legitimately get a new address after its lease expired or was
// released, so whether this is an error is the test's decision. The error
// is a *ConflictError listing every such MAC.
func CheckStable(rs []Result) error {
	return check(rs, "MAC ACKed several IPs",
		func(r Result) string { return canonMAC(r.MAC) },
		func(r Result) string { return canonIP(r.IP) })
}

// CheckOverlap fails if one IP was ACKed to two different MACs at once:
// each ACK is taken to give its MAC the IP from the start of the exchange
// until lease after its end (a client that renews keeps it throughout; a
// RELEASE is not in the log, so a released lease counts as held to its
// end). Unlike CheckUnique it allows an address to pass to another client
// once the first one's lease has run out. The error is a *ConflictError
// whose holders are the MACs whose intervals overlap another's.
func CheckOverlap(rs []Result, lease time.Duration) error {
	type held struct {
		mac        string
		from, till time.Time
		count      int
		firstACK   time.Time
		lastACK    time.Time
	}
	byIP := map[string][]*held{}
	var order []string
	for _, r := range sortedByStart(rs) {
		if !r.OK {
			continue
		}
		ip, mac := canonIP(r.IP), canonMAC(r.MAC)
		hs := byIP[ip]
		if hs == nil {
			order = append(order, ip)
		}
		// One interval per run of ACKs to the same MAC: a renewal before
		// the lease ran out extends it, a later ACK starts a new one.
		if n := len(hs); n > 0 && hs[n-1].mac == mac && !r.Start.After(hs[n-1].till) {
			h := hs[n-1]
			h.till, h.count, h.lastACK = maxTime(h.till, r.End.Add(lease)), h.count+1, r.Start
			continue
		}
		byIP[ip] = append(hs, &held{mac: mac, from: r.Start, till: r.End.Add(lease), count: 1, firstACK: r.Start, lastACK: r.Start})
	}
	var cs []Conflict
	for _, ip := range order {
		hs := byIP[ip]
		var hit []Holder
		for i, a := range hs {
			for _, b := range hs[i+1:] {
				if a.mac != b.mac && b.from.Before(a.till) && a.from.Before(b.till) {
					hit = append(hit, Holder{Value: a.mac, First: a.firstACK, Last: a.lastACK, Count: a.count},
						Holder{Value: b.mac, First: b.firstACK, Last: b.lastACK, Count: b.count})
				}
			}
		}
		if len(hit) > 0 {
			cs = append(cs, Conflict{Key: ip, Holders: hit})
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return &ConflictError{What: "IP ACKed to two MACs at once", Conflicts: cs}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func check(rs []Result, what string, key, value func(Result) string) error {
	type entry struct {
		key     string
		holders []Holder
	}
	byKey := map[string]*entry{}
	var order []*entry
	for _, r := range sortedByStart(rs) {
		if !r.OK {
			continue
		}
		k, v := key(r), value(r)
		e := byKey[k]
		if e == nil {
			e = &entry{key: k}
			byKey[k] = e
			order = append(order, e)
		}
		i := slices.IndexFunc(e.holders, func(h Holder) bool { return h.Value == v })
		if i < 0 {
			e.holders = append(e.holders, Holder{Value: v, First: r.Start})
			i = len(e.holders) - 1
		}
		e.holders[i].Last = r.Start
		e.holders[i].Count++
	}
	var cs []Conflict
	for _, e := range order {
		if len(e.holders) > 1 {
			cs = append(cs, Conflict{Key: e.key, Holders: e.holders})
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return &ConflictError{What: what, Conflicts: cs}
}

func canonMAC(s string) string {
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String()
	}
	return strings.ToLower(s)
}

func canonIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// Summary condenses a log.
type Summary struct {
	Attempts, OK, Timeouts, Naks, Errors int
	// Latencies of the successful exchanges.
	Min, P50, P90, P99, Max time.Duration
	Gaps                    int
	LongestGap              time.Duration
}

// Summarize counts rs and computes the latency percentiles of its
// successful exchanges (nearest rank).
func Summarize(rs []Result) Summary {
	s := Summary{Attempts: len(rs)}
	var lat []time.Duration
	for _, r := range rs {
		switch {
		case r.OK:
			s.OK++
			lat = append(lat, r.Latency())
		case r.Reason == ReasonTimeout:
			s.Timeouts++
		case r.Reason == ReasonNak:
			s.Naks++
		default:
			s.Errors++
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p int) time.Duration { return lat[(len(lat)*p+99)/100-1] }
		s.Min, s.P50, s.P90, s.P99, s.Max = lat[0], pct(50), pct(90), pct(99), lat[len(lat)-1]
	}
	gs := Gaps(rs)
	s.Gaps = len(gs)
	for _, g := range gs {
		s.LongestGap = max(s.LongestGap, g.Duration)
	}
	return s
}

func (s Summary) String() string {
	return fmt.Sprintf("attempts=%d ok=%d timeout=%d nak=%d error=%d latency min/p50/p90/p99/max=%v/%v/%v/%v/%v gaps=%d longest_gap=%v",
		s.Attempts, s.OK, s.Timeouts, s.Naks, s.Errors, s.Min, s.P50, s.P90, s.P99, s.Max, s.Gaps, s.LongestGap)
}
