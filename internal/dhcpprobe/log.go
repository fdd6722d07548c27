// Package dhcpprobe measures DHCP availability from a client's point of
// view: a prober performs one full DISCOVER→OFFER→REQUEST→ACK exchange at
// a fixed interval and logs one line per attempt; the functions here parse
// such logs and find the outages (gaps) and address conflicts in them, so
// failover tests and benchmarks can assert on what clients actually saw.
//
// One log line per attempt, times in Unix milliseconds:
//
//	<start_ms> <end_ms> ok <mac> <ip> <server_id>
//	<start_ms> <end_ms> fail <mac> <reason>
//
// <server_id> is "-" when the ACK carried none. <reason> is "timeout",
// "nak" or an error text with its white space replaced by '_'. Blank lines
// and lines starting with '#' are ignored by ParseLog.
package dhcpprobe

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Reasons logged for failed attempts besides error texts.
const (
	ReasonTimeout = "timeout" // no OFFER or no ACK/NAK before the attempt's deadline
	ReasonNak     = "nak"     // the server answered the REQUEST with a NAK
)

// Result is one DHCP exchange as seen by the prober.
type Result struct {
	Start, End time.Time
	OK         bool
	MAC        string // client hardware address, e.g. 02:00:00:00:00:01
	IP         string // address ACKed (OK only)
	Server     string // server identifier of the ACK (OK only; may be empty)
	Reason     string // why it failed (!OK only)
}

// Latency is the time the exchange took.
func (r Result) Latency() time.Duration { return r.End.Sub(r.Start) }

// String formats r as one log line, without the trailing newline.
func (r Result) String() string {
	b := r.AppendLine(nil)
	return string(b[:len(b)-1])
}

// AppendLine appends r as one log line, newline included, to b.
func (r Result) AppendLine(b []byte) []byte {
	b = strconv.AppendInt(b, r.Start.UnixMilli(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.End.UnixMilli(), 10)
	if r.OK {
		b = append(b, " ok "...)
		b = append(b, field(r.MAC, "-")...)
		b = append(b, ' ')
		b = append(b, field(r.IP, "-")...)
		b = append(b, ' ')
		b = append(b, field(r.Server, "-")...)
	} else {
		b = append(b, " fail "...)
		b = append(b, field(r.MAC, "-")...)
		b = append(b, ' ')
		b = append(b, field(r.Reason, "error")...)
	}
	return append(b, '\n')
}

// SanitizeReason turns an error text into a single log field: white space
// (runs of it) becomes '_'; an empty text becomes "error".
func SanitizeReason(s string) string { return field(s, "error") }

// field makes s safe to use as one space-separated field.
func field(s, empty string) string {
	s = strings.TrimFunc(s, unicode.IsSpace)
	if s == "" {
		return empty
	}
	if strings.IndexFunc(s, unicode.IsSpace) < 0 {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, unicode.IsSpace), "_")
}

// maxLine bounds one log line; real lines are well under 200 bytes.
const maxLine = 64 << 10

// ParseLog reads a prober log. MACs and IPs are returned in canonical form
// (lower-case MAC, netip text), so results from different files compare
// equal. It fails on the first malformed line, naming it.
func ParseLog(r io.Reader) ([]Result, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var rs []Result
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		res, err := parseLine(line)
		if err != nil {
			return rs, fmt.Errorf("dhcpprobe: line %d: %w", n, err)
		}
		rs = append(rs, res)
	}
	if err := sc.Err(); err != nil {
		return rs, fmt.Errorf("dhcpprobe: reading log: %w", err)
	}
	return rs, nil
}

func parseLine(line string) (Result, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return Result{}, fmt.Errorf("want at least 3 fields, got %d", len(f))
	}
	var res Result
	var err error
	if res.Start, err = parseMillis(f[0]); err != nil {
		return Result{}, fmt.Errorf("start: %w", err)
	}
	if res.End, err = parseMillis(f[1]); err != nil {
		return Result{}, fmt.Errorf("end: %w", err)
	}
	if res.End.Before(res.Start) {
		return Result{}, fmt.Errorf("end %s before start %s", f[1], f[0])
	}
	switch f[2] {
	case "ok":
		if len(f) != 6 {
			return Result{}, fmt.Errorf("ok line: want 6 fields, got %d", len(f))
		}
		res.OK = true
		if res.MAC, err = parseMAC(f[3]); err != nil {
			return Result{}, err
		}
		if res.IP, err = parseIP(f[4]); err != nil {
			return Result{}, err
		}
		if f[5] != "-" {
			if res.Server, err = parseIP(f[5]); err != nil {
				return Result{}, fmt.Errorf("server: %w", err)
			}
		}
	case "fail":
		if len(f) != 5 {
			return Result{}, fmt.Errorf("fail line: want 5 fields, got %d", len(f))
		}
		if res.MAC, err = parseMAC(f[3]); err != nil {
			return Result{}, err
		}
		res.Reason = f[4]
	default:
		return Result{}, fmt.Errorf("status %q is neither ok nor fail", f[2])
	}
	return res, nil
}

func parseMillis(s string) (time.Time, error) {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", err
	}
	return hw.String(), nil
}

func parseIP(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}
