package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// LimitedTransport caps the bytes per second this replica reads from
// upstream and from its peers, all transfers together, so that copying a
// multi-GB image does not crowd out machines booting on the same network
// (node.artifacts.max_bytes_per_second). bytesPerSecond <= 0: no cap.
func LimitedTransport(base http.RoundTripper, bytesPerSecond int64) http.RoundTripper {
	if bytesPerSecond <= 0 {
		return base
	}
	// The burst is what one read may take at once: 64 KiB, or the whole
	// second's budget when that is smaller.
	burst := int64(64 << 10)
	if bytesPerSecond < burst {
		burst = bytesPerSecond
	}
	return &limitedTransport{base: base, lim: rate.NewLimiter(rate.Limit(bytesPerSecond), int(burst))}
}

type limitedTransport struct {
	base http.RoundTripper
	lim  *rate.Limiter
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, lim: t.lim, ctx: req.Context()}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	lim *rate.Limiter
	ctx context.Context
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if max := b.lim.Burst(); len(p) > max {
		p = p[:max]
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		if werr := b.lim.WaitN(b.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// StallTransport cuts a response body that delivers less than 64 KiB in
// a stall period: a peer or upstream that hangs (or trickles) mid-transfer
// must not hold a transfer slot for ever; the download then resumes
// (Range) on the next attempt.
func StallTransport(base http.RoundTripper, stall time.Duration) http.RoundTripper {
	return &stallTransport{base: base, stall: stall}
}

type stallTransport struct {
	base  http.RoundTripper
	stall time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b := &stallBody{ReadCloser: resp.Body, stall: t.stall}
	b.timer = time.AfterFunc(t.stall, func() {
		b.stalled.Store(true)
		resp.Body.Close()
	})
	resp.Body = b
	return resp, nil
}

type stallBody struct {
	io.ReadCloser
	timer   *time.Timer
	stall   time.Duration
	stalled atomic.Bool
	// since: bytes received since the timer was last reset.
	since int64
}

// stallBytes is what a body must deliver within each stall period: a
// trickle of a few bytes a minute would otherwise hold a transfer slot for
// ever.
const stallBytes = 64 << 10

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.stalled.Load() {
		return n, fmt.Errorf("the transfer stalled: less than %d bytes received in %s", stallBytes, b.stall)
	}
	b.since += int64(n)
	if b.since >= stallBytes {
		b.since = 0
		b.timer.Reset(b.stall)
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	return b.ReadCloser.Close()
}

// CheckRedirect is the redirect policy of transfers: an upstream may send
// the download to a mirror, but not more than three hops, not from https
// down to http, and not to this host or a link-local address (a hostile
// upstream would otherwise make a replica fetch from etcd or its own
// admin API and show the answer's digest in the catalogue).
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("more than 3 redirects")
	}
	if len(via) > 0 && via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect from https down to %s refused", req.URL.Scheme)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %s URL refused", req.URL.Scheme)
	}
	host := req.URL.Hostname()
	if strings.EqualFold(host, "localhost") {
		return errors.New("redirect to localhost refused")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("redirect to %s refused", ip)
		}
	}
	return nil
}
