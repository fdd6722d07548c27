package dhcpprobe

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// logOf parses a synthetic log, failing the test on error.
func logOf(t *testing.T, lines ...string) []Result {
	t.Helper()
	rs, err := ParseLog(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const (
	m1 = "02:00:00:00:00:01"
	m2 = "02:00:00:00:00:02"
	m3 = "02:00:00:00:00:03"
)

func ok(start, end int64, mac, ip string) string {
	return Result{Start: ms(start), End: ms(end), OK: true, MAC: mac, IP: ip, Server: "10.0.0.1"}.String()
}

func fail(start, end int64, mac, reason string) string {
	return Result{Start: ms(start), End: ms(end), MAC: mac, Reason: reason}.String()
}

func TestGaps(t *testing.T) {
	tests := []struct {
		name    string
		log     []string
		want    []Gap // Duration is checked against End-Start
		longest time.Duration
	}{
		{name: "empty"},
		{
			name: "all ok",
			log:  []string{ok(0, 5, m1, "10.0.0.100"), ok(50, 53, m2, "10.0.0.101")},
		},
		{
			name: "one gap between successes",
			log: []string{
				ok(0, 5, m1, "10.0.0.100"),
				fail(50, 300, m2, "timeout"),
				fail(300, 550, m3, "timeout"),
				ok(600, 604, m1, "10.0.0.100"),
			},
			want:    []Gap{{Start: ms(5), End: ms(600), Failures: 2}},
			longest: 595 * time.Millisecond,
		},
		{
			name:    "single failure is a gap",
			log:     []string{ok(0, 5, m1, "10.0.0.100"), fail(50, 52, m2, "nak"), ok(100, 103, m3, "10.0.0.102")},
			want:    []Gap{{Start: ms(5), End: ms(100), Failures: 1}},
			longest: 95 * time.Millisecond,
		},
		{
			name: "leading and trailing",
			log: []string{
				fail(0, 250, m1, "timeout"),
				fail(250, 500, m2, "timeout"),
				ok(500, 510, m3, "10.0.0.102"),
				ok(550, 560, m1, "10.0.0.100"),
				fail(600, 850, m2, "timeout"),
			},
			want: []Gap{
				{Start: ms(0), End: ms(500), Failures: 2, Leading: true},
				{Start: ms(560), End: ms(850), Failures: 1, Trailing: true},
			},
			longest: 500 * time.Millisecond,
		},
		{
			name:    "all failed",
			log:     []string{fail(10, 260, m1, "timeout"), fail(260, 510, m2, "timeout")},
			want:    []Gap{{Start: ms(10), End: ms(510), Failures: 2, Leading: true, Trailing: true}},
			longest: 500 * time.Millisecond,
		},
		{
			name: "several gaps, unsorted input",
			log: []string{
				ok(1000, 1004, m1, "10.0.0.100"),
				fail(100, 350, m2, "timeout"),
				ok(0, 3, m1, "10.0.0.100"),
				ok(400, 402, m3, "10.0.0.102"),
				fail(700, 950, m3, "timeout"),
				fail(450, 460, m2, "nak"),
				ok(500, 501, m1, "10.0.0.100"),
			},
			want: []Gap{
				{Start: ms(3), End: ms(400), Failures: 1},
				{Start: ms(402), End: ms(500), Failures: 1},
				{Start: ms(501), End: ms(1000), Failures: 1},
			},
			longest: 499 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := logOf(t, tt.log...)
			got := Gaps(rs)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d gaps %+v, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				w.Duration = w.End.Sub(w.Start)
				g := got[i]
				if !g.Start.Equal(w.Start) || !g.End.Equal(w.End) || g.Duration != w.Duration ||
					g.Failures != w.Failures || g.Leading != w.Leading || g.Trailing != w.Trailing {
					t.Errorf("gap %d = %+v, want %+v", i, g, w)
				}
			}
			if l := LongestGap(rs); l != tt.longest {
				t.Errorf("LongestGap = %v, want %v", l, tt.longest)
			}
		})
	}
}

func TestGapsOverlappingProbers(t *testing.T) {
	// Two probers' logs concatenated; prober B's success overlaps A's
	// failure, so the gap is clamped rather than negative.
	rs := logOf(t,
		ok(0, 100, m1, "10.0.0.100"),
		fail(10, 20, m2, "timeout"),
		ok(50, 60, m3, "10.0.0.102"),
	)
	g := Gaps(rs)
	if len(g) != 1 || g[0].Duration < 0 {
		t.Fatalf("gaps = %+v", g)
	}
}

func TestCheckUnique(t *testing.T) {
	tests := []struct {
		name     string
		log      []string
		wantKeys []string // conflicting IPs, in order of first ACK
		wantMsg  []string
	}{
		{name: "empty"},
		{
			name: "stable pool",
			log: []string{
				ok(0, 1, m1, "10.0.0.100"), ok(10, 11, m2, "10.0.0.101"),
				ok(20, 21, m1, "10.0.0.100"), ok(30, 31, m2, "10.0.0.101"),
			},
		},
		{
			name: "failures are ignored",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), fail(10, 11, m2, "nak"), fail(20, 21, m3, "timeout")},
		},
		{
			name: "same IP to two MACs",
			log: []string{
				ok(0, 1, m1, "10.0.0.100"), ok(10, 11, m2, "10.0.0.101"),
				ok(20, 21, m3, "10.0.0.100"), ok(30, 31, m1, "10.0.0.100"),
			},
			wantKeys: []string{"10.0.0.100"},
			wantMsg:  []string{"1× IP ACKed to several MACs", "10.0.0.100:", m1 + " (2×", m3 + " (1×"},
		},
		{
			name: "two conflicting IPs",
			log: []string{
				ok(0, 1, m1, "10.0.0.101"), ok(10, 11, m2, "10.0.0.101"),
				ok(20, 21, m3, "10.0.0.100"), ok(30, 31, m1, "10.0.0.100"),
			},
			wantKeys: []string{"10.0.0.101", "10.0.0.100"},
			wantMsg:  []string{"2× IP ACKed", "10.0.0.101:", "10.0.0.100:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckUnique(logOf(t, tt.log...))
			checkConflicts(t, err, tt.wantKeys, tt.wantMsg)
		})
	}
}

func TestCheckOverlap(t *testing.T) {
	const lease = 100 // ms
	tests := []struct {
		name     string
		log      []string
		wantKeys []string
		wantMsg  []string
	}{
		{name: "empty"},
		{
			name: "renewals keep one holder",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), ok(50, 51, m1, "10.0.0.100"), ok(140, 141, m1, "10.0.0.100")},
		},
		{
			name: "the address passes on after the lease ran out",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), ok(102, 103, m2, "10.0.0.100")},
		},
		{
			name: "failures are ignored",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), fail(10, 11, m2, "timeout")},
		},
		{
			name:     "a second MAC while the first one's lease runs",
			log:      []string{ok(0, 1, m1, "10.0.0.100"), ok(100, 101, m2, "10.0.0.100"), ok(500, 501, m3, "10.0.0.101")},
			wantKeys: []string{"10.0.0.100"},
			wantMsg:  []string{"1× IP ACKed to two MACs at once", "10.0.0.100:", m1 + " (1×", m2 + " (1×"},
		},
		{
			name: "a renewal extends the lease into the next holder's",
			log: []string{ok(0, 1, m1, "10.0.0.100"), ok(90, 91, m1, "10.0.0.100"),
				ok(150, 151, m2, "10.0.0.100")},
			wantKeys: []string{"10.0.0.100"},
			wantMsg:  []string{m1 + " (2×"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckOverlap(logOf(t, tt.log...), lease*time.Millisecond)
			checkConflicts(t, err, tt.wantKeys, tt.wantMsg)
		})
	}
}

func TestCheckStable(t *testing.T) {
	tests := []struct {
		name     string
		log      []string
		wantKeys []string
		wantMsg  []string
	}{
		{name: "empty"},
		{
			name: "stable",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), ok(10, 11, m2, "10.0.0.101"), ok(20, 21, m1, "10.0.0.100")},
		},
		{
			name: "MAC moved",
			log: []string{
				ok(0, 1, m1, "10.0.0.100"), ok(10, 11, m2, "10.0.0.101"),
				ok(20, 21, m1, "10.0.0.102"), ok(30, 31, m2, "10.0.0.101"),
			},
			wantKeys: []string{m1},
			wantMsg:  []string{"1× MAC ACKed several IPs", m1 + ":", "10.0.0.100 (1×", "10.0.0.102 (1×"},
		},
		{
			// Differently written MACs are the same client.
			name: "MAC spelling does not matter",
			log:  []string{ok(0, 1, m1, "10.0.0.100"), "10 11 ok 02-00-00-00-00-01 10.0.0.100 10.0.0.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckStable(logOf(t, tt.log...))
			checkConflicts(t, err, tt.wantKeys, tt.wantMsg)
		})
	}
}

func checkConflicts(t *testing.T, err error, wantKeys, wantMsg []string) {
	t.Helper()
	if len(wantKeys) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ce *ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *ConflictError", err)
	}
	var keys []string
	for _, c := range ce.Conflicts {
		keys = append(keys, c.Key)
		if len(c.Holders) < 2 {
			t.Errorf("conflict %s has %d holders", c.Key, len(c.Holders))
		}
	}
	if strings.Join(keys, " ") != strings.Join(wantKeys, " ") {
		t.Errorf("conflicting keys = %v, want %v", keys, wantKeys)
	}
	for _, s := range wantMsg {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestConflictErrorBounded(t *testing.T) {
	var rs []Result
	for i := range 20 {
		ip := fmt.Sprintf("10.0.1.%d", i)
		rs = append(rs,
			Result{Start: ms(int64(i)), OK: true, MAC: m1, IP: ip},
			Result{Start: ms(int64(i)), OK: true, MAC: m2, IP: ip})
	}
	err := CheckUnique(rs)
	var ce *ConflictError
	if !errors.As(err, &ce) || len(ce.Conflicts) != 20 || !strings.Contains(err.Error(), "and 15 more") {
		t.Fatalf("err = %v", err)
	}
}

func TestSummarize(t *testing.T) {
	var lines []string
	for i := int64(1); i <= 100; i++ { // latencies 1..100 ms
		lines = append(lines, ok(i*1000, i*1000+i, m1, "10.0.0.100"))
	}
	lines = append(lines,
		fail(200000, 200250, m2, "timeout"),
		fail(200250, 200260, m2, "nak"),
		fail(200260, 200261, m2, "send:_no_such_device"),
	)
	s := Summarize(logOf(t, lines...))
	want := Summary{
		Attempts: 103, OK: 100, Timeouts: 1, Naks: 1, Errors: 1,
		Min: time.Millisecond, P50: 50 * time.Millisecond, P90: 90 * time.Millisecond,
		P99: 99 * time.Millisecond, Max: 100 * time.Millisecond,
		Gaps: 1, LongestGap: 200261*time.Millisecond - 100100*time.Millisecond,
	}
	if s != want {
		t.Errorf("Summarize =\n%+v, want\n%+v", s, want)
	}
	if !strings.Contains(s.String(), "ok=100") {
		t.Errorf("String() = %q", s)
	}
	if z := Summarize(nil); z != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v", z)
	}
}
