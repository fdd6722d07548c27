package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/dhcpprobe"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    string
		wantErr string
		check   func(o options) bool
	}{
		{args: "-i cli0", check: func(o options) bool {
			return o.iface == "cli0" && o.every == 100*time.Millisecond && o.timeout == 250*time.Millisecond &&
				o.cfg.Timeout == o.timeout && o.macs == 16 && o.macBase == 0 && o.cfg.Arch == -1 &&
				!o.cfg.Release && o.cfg.Broadcast && o.cfg.Vendor == "" && o.out == "" && o.duration == 0
		}},
		{args: "-i cli0 -every 50ms -duration 60s -macs 4 -mac-base 256 -timeout 1s -out p.log -vendor PXEClient -arch 7 -release -broadcast=false",
			check: func(o options) bool {
				return o.every == 50*time.Millisecond && o.duration == time.Minute && o.macs == 4 && o.macBase == 256 &&
					o.cfg.Timeout == time.Second && o.out == "p.log" && o.cfg.Vendor == "PXEClient" &&
					o.cfg.Arch == 7 && o.cfg.Release && !o.cfg.Broadcast
			}},
		{args: "", wantErr: "-i is required"},
		{args: "-i cli0 extra", wantErr: "unexpected"},
		{args: "-i cli0 -every 0", wantErr: "-every"},
		{args: "-i cli0 -timeout -1s", wantErr: "-timeout"},
		{args: "-i cli0 -duration -1s", wantErr: "-duration"},
		{args: "-i cli0 -macs 0", wantErr: "-macs"},
		{args: "-i cli0 -mac-base 65530 -macs 7", wantErr: "0..65535"},
		{args: "-i cli0 -mac-base -1", wantErr: "0..65535"},
		{args: "-i cli0 -arch 65536", wantErr: "-arch"},
		{args: "-i cli0 -bogus", wantErr: "not defined"},
	}
	for _, tt := range tests {
		o, err := parseFlags(strings.Fields(tt.args), io.Discard)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !tt.check(o) {
			t.Errorf("%q: %+v, %v", tt.args, o, err)
		}
	}
}

// fakeExchange records attempts; the n-th takes durations[n%len], and every
// third one fails with a timeout.
type fakeExchange struct {
	durations []time.Duration
	mu        sync.Mutex
	active    int
	overlap   bool
	results   []dhcpprobe.Result
}

func (f *fakeExchange) exchange(ctx context.Context, mac net.HardwareAddr) dhcpprobe.Result {
	f.mu.Lock()
	n := len(f.results)
	f.active++
	f.overlap = f.overlap || f.active > 1
	f.mu.Unlock()
	r := dhcpprobe.Result{Start: time.Now(), MAC: mac.String()}
	time.Sleep(f.durations[n%len(f.durations)])
	if ctx.Err() != nil {
		r.Reason = "cancelled" // run must not cancel attempts in flight
	} else if n%3 == 2 {
		r.Reason = dhcpprobe.ReasonTimeout
	} else {
		r.OK, r.IP, r.Server = true, "10.77.0.100", "10.77.0.1"
	}
	r.End = time.Now()
	f.mu.Lock()
	f.active--
	f.results = append(f.results, r)
	f.mu.Unlock()
	return r
}

func TestRunSchedule(t *testing.T) {
	const every = 100 * time.Millisecond
	f := &fakeExchange{durations: []time.Duration{
		time.Millisecond, 2 * time.Millisecond, 150 * time.Millisecond, // the third overruns the interval
	}}
	o := options{every: every, macs: 3, macBase: 0x1ff}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var out bytes.Buffer
	sum, err := run(ctx, o, f.exchange, &out)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := dhcpprobe.ParseLog(&out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(f.results) || sum.Attempts != len(rs) || len(rs) < 6 {
		t.Fatalf("%d lines, %d attempts, summary %+v", len(rs), len(f.results), sum)
	}
	if f.overlap {
		t.Error("attempts overlapped")
	}
	wantMACs := []string{"02:00:00:00:01:ff", "02:00:00:00:02:00", "02:00:00:00:02:01"}
	for i, r := range rs {
		if r.MAC != wantMACs[i%3] {
			t.Errorf("attempt %d used %s, want %s", i, r.MAC, wantMACs[i%3])
		}
		if r.Reason == "cancelled" {
			t.Errorf("attempt %d was cancelled", i)
		}
		if i == 0 {
			continue
		}
		prev := f.results[i-1]
		gap := f.results[i].Start.Sub(prev.Start)
		switch {
		case prev.Latency() < every && gap < every:
			t.Errorf("attempt %d started %v after the previous one, before the interval %v", i, gap, every)
		// Half an interval: slack for a loaded machine, and less than
		// waiting a whole interval after the late one.
		case prev.Latency() >= every && f.results[i].Start.Sub(prev.End) > every/2:
			t.Errorf("attempt %d started %v after an overrunning one ended, want right away",
				i, f.results[i].Start.Sub(prev.End))
		}
	}
	if sum.OK == 0 || sum.Timeouts == 0 {
		t.Errorf("summary %+v", sum)
	}
}

func TestRunFinishesAttemptInFlight(t *testing.T) {
	f := &fakeExchange{durations: []time.Duration{100 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel) // like SIGINT mid-attempt
	var out bytes.Buffer
	start := time.Now()
	if _, err := run(ctx, options{every: time.Second, macs: 1}, f.exchange, &out); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("run took %v after cancel", el)
	}
	rs, err := dhcpprobe.ParseLog(&out)
	if err != nil || len(rs) != 1 || !rs[0].OK {
		t.Fatalf("log %q: %v, %v", out.String(), rs, err)
	}
}

func TestRunStopsWhileWaiting(t *testing.T) {
	f := &fakeExchange{durations: []time.Duration{0}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	sum, err := run(ctx, options{every: time.Hour, macs: 1}, f.exchange, io.Discard)
	if err != nil || sum.Attempts != 1 || time.Since(start) > time.Second {
		t.Fatalf("%+v, %v after %v", sum, err, time.Since(start))
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRunWriteError(t *testing.T) {
	f := &fakeExchange{durations: []time.Duration{0}}
	_, err := run(context.Background(), options{every: time.Millisecond, macs: 1}, f.exchange, failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
}
