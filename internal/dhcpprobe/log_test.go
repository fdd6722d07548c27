package dhcpprobe

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func ms(v int64) time.Time { return time.UnixMilli(v) }

func sameResult(a, b Result) bool {
	return a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.OK == b.OK &&
		a.MAC == b.MAC && a.IP == b.IP && a.Server == b.Server && a.Reason == b.Reason
}

func sameResults(a, b []Result) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameResult(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestParseLog(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Result
		wantErr string // substring; empty means no error
	}{
		{name: "empty", in: "", want: nil},
		{
			name: "ok and fail",
			in: "1000 1003 ok 02:00:00:00:00:01 10.77.0.100 10.77.0.1\n" +
				"1050 1300 fail 02:00:00:00:00:02 timeout\n" +
				"1300 1302 fail 02:00:00:00:00:03 nak\n",
			want: []Result{
				{Start: ms(1000), End: ms(1003), OK: true, MAC: "02:00:00:00:00:01", IP: "10.77.0.100", Server: "10.77.0.1"},
				{Start: ms(1050), End: ms(1300), MAC: "02:00:00:00:00:02", Reason: "timeout"},
				{Start: ms(1300), End: ms(1302), MAC: "02:00:00:00:00:03", Reason: "nak"},
			},
		},
		{
			name: "comments, blank lines, CRLF, extra blanks, no final newline",
			in:   "# dhcpprobe -i cli0\r\n\r\n  1 2  ok\t02:00:00:00:00:01 10.0.0.1 -\r\n\n3 4 fail 02:00:00:00:00:01 send_DISCOVER:_boom",
			want: []Result{
				{Start: ms(1), End: ms(2), OK: true, MAC: "02:00:00:00:00:01", IP: "10.0.0.1"},
				{Start: ms(3), End: ms(4), MAC: "02:00:00:00:00:01", Reason: "send_DISCOVER:_boom"},
			},
		},
		{name: "IP with leading zeros", in: "5 5 ok 02:00:00:00:00:01 010.000.000.001 10.0.0.254\n", wantErr: "line 1"},
		{
			name: "MAC is normalised",
			in:   "5 5 ok 02-00-00-00-AB-CD 10.0.0.1 10.0.0.254\n",
			want: []Result{{Start: ms(5), End: ms(5), OK: true, MAC: "02:00:00:00:ab:cd", IP: "10.0.0.1", Server: "10.0.0.254"}},
		},
		{name: "too few fields", in: "1 2\n", wantErr: "line 1: want at least 3"},
		{name: "ok too short", in: "1 2 ok 02:00:00:00:00:01 10.0.0.1\n", wantErr: "want 6 fields"},
		{name: "fail with spaces in reason", in: "1 2 fail 02:00:00:00:00:01 no route\n", wantErr: "want 5 fields"},
		{name: "bad status", in: "1 2 maybe 02:00:00:00:00:01 x\n", wantErr: "neither ok nor fail"},
		{name: "bad start", in: "x 2 fail 02:00:00:00:00:01 timeout\n", wantErr: "start"},
		{name: "bad end", in: "1 2.5 fail 02:00:00:00:00:01 timeout\n", wantErr: "end"},
		{name: "end before start", in: "5 4 fail 02:00:00:00:00:01 timeout\n", wantErr: "before start"},
		{name: "bad MAC", in: "1 2 fail 02:00:00:00:00 timeout\n", wantErr: "line 1"},
		{name: "bad IP", in: "1 2 ok 02:00:00:00:00:01 10.0.0 10.0.0.1\n", wantErr: "line 1"},
		{name: "missing IP", in: "1 2 ok 02:00:00:00:00:01 - 10.0.0.1\n", wantErr: "line 1"},
		{name: "bad server", in: "1 2 ok 02:00:00:00:00:01 10.0.0.1 srv\n", wantErr: "server"},
		{
			name:    "error names the line",
			in:      "1 2 fail 02:00:00:00:00:01 timeout\n# ok\n3 4 ok\n",
			wantErr: "line 3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLog(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameResults(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseLogLongLine(t *testing.T) {
	in := "1 2 fail 02:00:00:00:00:01 " + strings.Repeat("x", maxLine) + "\n"
	if _, err := ParseLog(strings.NewReader(in)); err == nil {
		t.Fatal("want an error for an over-long line")
	}
}

func TestResultString(t *testing.T) {
	tests := []struct {
		r    Result
		want string
	}{
		{Result{Start: ms(1700000000123), End: ms(1700000000126), OK: true, MAC: "02:00:00:00:00:01", IP: "10.0.0.5", Server: "10.0.0.1"},
			"1700000000123 1700000000126 ok 02:00:00:00:00:01 10.0.0.5 10.0.0.1"},
		{Result{Start: ms(1), End: ms(2), OK: true, MAC: "02:00:00:00:00:01", IP: "10.0.0.5"},
			"1 2 ok 02:00:00:00:00:01 10.0.0.5 -"},
		{Result{Start: ms(1), End: ms(251), MAC: "02:00:00:00:00:01", Reason: ReasonTimeout},
			"1 251 fail 02:00:00:00:00:01 timeout"},
		{Result{Start: ms(1), End: ms(2), MAC: "02:00:00:00:00:01", Reason: " send DISCOVER:\n network is\tdown "},
			"1 2 fail 02:00:00:00:00:01 send_DISCOVER:_network_is_down"},
		{Result{Start: ms(1), End: ms(2), MAC: "02:00:00:00:00:01"},
			"1 2 fail 02:00:00:00:00:01 error"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		rs, err := ParseLog(strings.NewReader(string(tt.r.AppendLine(nil))))
		if err != nil || len(rs) != 1 {
			t.Errorf("ParseLog(%q) = %v, %v", tt.want, rs, err)
		}
	}
}

// FuzzParseLog checks that ParseLog never panics and that what it accepts
// survives formatting and parsing again unchanged.
func FuzzParseLog(f *testing.F) {
	for _, s := range []string{
		"1000 1003 ok 02:00:00:00:00:01 10.77.0.100 10.77.0.1\n1050 1300 fail 02:00:00:00:00:02 timeout\n",
		"# c\n\n1 2 ok 02:00:00:00:00:01 10.0.0.1 -\r\n",
		"1 2 fail 02:00:00:00:00:01 nak",
		"-5 +7 ok 02-00-00-00-AB-CD fe80::1%eth0 ::ffff:10.0.0.1\n",
		"1 2 ok 00:00:5e:00:53:01:02:03 10.0.0.1 10.0.0.2\n",
		"1 2 fail 02:00:00:00:00:01 \xff\xfe\n",
		"9223372036854775807 9223372036854775807 fail 02:00:00:00:00:01 timeout\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rs, err := ParseLog(bytes.NewReader(in))
		if err != nil {
			return
		}
		var out []byte
		for _, r := range rs {
			if r.End.Before(r.Start) {
				t.Fatalf("accepted end before start: %+v", r)
			}
			if r.OK == (r.Reason != "") || (r.OK && r.IP == "") {
				t.Fatalf("inconsistent result %+v", r)
			}
			out = r.AppendLine(out)
		}
		again, err := ParseLog(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", out, err)
		}
		if !sameResults(rs, again) {
			t.Fatalf("round trip changed results:\n%+v\n%+v", rs, again)
		}
		// The analyses must cope with anything ParseLog accepts.
		Gaps(rs)
		_ = CheckUnique(rs)
		_ = CheckStable(rs)
		Summarize(rs)
	})
}
