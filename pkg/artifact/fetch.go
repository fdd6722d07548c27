package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// Download fetches url into p, resuming from p.Size() with an HTTP Range
// request, and again after a broken connection (up to attempts tries in
// all, with a short backoff; a 200 answer to a Range request starts over).
// header is added to every request (a peer's authentication). progress,
// when not nil, is called with the bytes held and the total (0 when
// unknown) at most every ~500 ms and at the end. Before any byte is
// written, the expected total (Content-Length or Content-Range) is
// checked with fits (ErrNoSpace from Cache.Fits): fits is given the bytes
// still to come (the total less what p already holds, which the cache
// counts already). It returns once the server has sent the whole file;
// the caller commits.
//
// A resumed request carries If-Range with the validator (ETag, else
// Last-Modified) of the first answer, so that a file changed upstream
// meanwhile comes whole (200) rather than spliced onto the old bytes. A
// partial left by an earlier run has no validator: there the digest check
// at Commit is what catches a splice.
//
// Refusals are not retried: an answer other than 200, 206 or 416 (a 5xx
// gateway or availability error is retried), ErrNoSpace, the end of ctx.
func Download(ctx context.Context, client *http.Client, url string, header http.Header, p *Partial, attempts int,
	fits func(need int64) error, progress func(bytes, total int64)) error {
	if attempts < 1 {
		attempts = 1
	}
	if client == nil {
		client = http.DefaultClient
	}
	d := &download{client: client, url: url, shown: redact(url), header: header, p: p, fits: fits, progress: progress}
	for attempt := 1; ; attempt++ {
		err := d.once(ctx)
		if err == nil {
			d.report(true)
			return nil
		}
		var r retryable
		if !errors.As(err, &r) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		if attempt >= attempts {
			return fmt.Errorf("%w (gave up after %d attempts)", r.err, attempts)
		}
		// 0.5 s, 1 s, 2 s, ... up to 10 s: long enough for a peer or
		// proxy to come back, short enough not to stall an install.
		wait := min(500*time.Millisecond<<(attempt-1), 10*time.Second)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// retryable marks a failure another attempt may get past (a broken
// connection, a server that is briefly unavailable).
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

type download struct {
	client   *http.Client
	url      string
	shown    string // url without a password, for errors
	header   http.Header
	p        *Partial
	fits     func(int64) error
	progress func(bytes, total int64)

	// validator is the ETag (or Last-Modified) of the first answer: a
	// resumed request asks for the rest of that version only.
	validator string
	total     int64 // 0: unknown
	reported  time.Time
}

// once makes one request and writes what it gets. nil: the whole file is
// in p.
func (d *download) once(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", d.shown, err)
	}
	for k, vs := range d.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	// The bytes as stored: a transparently gunzipped body would neither
	// resume (ranges count stored bytes) nor have the published digest.
	req.Header.Set("Accept-Encoding", "identity")
	from := d.p.Size()
	if from > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
		if d.validator != "" {
			req.Header.Set("If-Range", d.validator)
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("GET %s: %w", d.shown, ctx.Err())
		}
		// Not the url.Error, which names the URL a second time.
		var uerr *neturl.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return retryable{fmt.Errorf("GET %s: %w", d.shown, err)}
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		// The whole file: a first request, a server that ignores Range,
		// or a file that changed since the first answer.
		if from > 0 {
			if err := d.p.reset(); err != nil {
				return err
			}
		}
		d.total = max(resp.ContentLength, 0)
		d.validator = validatorOf(resp)
	case http.StatusPartialContent:
		start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fmt.Errorf("GET %s: 206 with %w", d.shown, err)
		}
		if start != from {
			// Not the bytes asked for: start over rather than splice.
			if err := d.p.reset(); err != nil {
				return err
			}
			return retryable{fmt.Errorf("GET %s: asked for bytes from %d, got a range from %d", d.shown, from, start)}
		}
		if total >= 0 {
			d.total = total
		}
		if d.validator == "" {
			d.validator = validatorOf(resp)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// Asked for bytes from the end of a file already complete; or
		// the partial is longer than the file (it changed): start over.
		if _, _, total, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && total == from && from > 0 {
			d.total = total
			return nil
		}
		if err := d.p.reset(); err != nil {
			return err
		}
		return retryable{fmt.Errorf("GET %s: 416 for bytes from %d: starting over", d.shown, from)}
	default:
		err := &StatusError{URL: d.shown, Code: resp.StatusCode}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
			return retryable{err}
		}
		return err
	}

	if d.total > 0 {
		if d.p.Size() > d.total {
			return fmt.Errorf("GET %s: holding %d bytes of a file of %d", d.shown, d.p.Size(), d.total)
		}
		if d.fits != nil {
			if err := d.fits(d.total - d.p.Size()); err != nil {
				return fmt.Errorf("GET %s: %w", d.shown, err)
			}
		}
	}
	d.report(false)
	if err := d.copy(resp.Body); err != nil {
		return err
	}
	if d.total > 0 && d.p.Size() < d.total {
		// A 206 of a middle range, or a body cut short without the
		// transport noticing: ask for the rest.
		return retryable{fmt.Errorf("GET %s: the answer ended at %d of %d bytes", d.shown, d.p.Size(), d.total)}
	}
	if d.total > 0 && d.p.Size() > d.total {
		return fmt.Errorf("GET %s: the server sent %d bytes of a file of %d", d.shown, d.p.Size(), d.total)
	}
	return nil
}

// copy streams body into the partial file through one fixed buffer:
// memory stays flat whatever the size of the file.
func (d *download) copy(body io.Reader) error {
	buf := make([]byte, 128<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := d.p.Write(buf[:n]); err != nil {
				return fmt.Errorf("GET %s: %w", d.shown, err)
			}
			d.report(false)
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return retryable{fmt.Errorf("GET %s: after %d bytes: %w", d.shown, d.p.Size(), rerr)}
		}
	}
}

// report calls progress at most every 500 ms, and always at the end.
func (d *download) report(final bool) {
	if d.progress == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(d.reported) < 500*time.Millisecond {
		return
	}
	d.reported = now
	d.progress(d.p.Size(), d.total)
}

// validatorOf is what If-Range may carry: a strong ETag, else the
// Last-Modified date (a weak ETag never matches in If-Range).
func validatorOf(resp *http.Response) string {
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		return etag
	}
	return resp.Header.Get("Last-Modified")
}

// parseContentRange reads "bytes <first>-<last>/<total>" (total -1 for
// "*") and "bytes */<total>" (first and last -1).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("a bad Content-Range %q", hostile.Clip(s, 100))
	unit, spec, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || unit != "bytes" {
		return 0, 0, 0, bad
	}
	rng, size, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if size != "*" {
		if total, err = strconv.ParseInt(size, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		if total < 0 {
			return 0, 0, 0, bad
		}
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// redact hides a password in a URL (https://user:secret@host/): errors
// end up in logs and in the catalogue.
func redact(s string) string {
	u, err := neturl.Parse(s)
	if err != nil {
		return hostile.Clip(s, 200)
	}
	return u.Redacted()
}

// StatusError is an answer other than the file: the URL (its password
// hidden) and the status.
type StatusError struct {
	URL  string
	Code int
}

func (e *StatusError) Error() string {
	return "GET " + e.URL + ": " + strconv.Itoa(e.Code) + " " + http.StatusText(e.Code)
}

// Permanent reports an answer that asking again will not change (a 404,
// a 403, a 410): the download is refused rather than retried for ever.
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

func statusText(resp *http.Response) string {
	return strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
}

// Get fetches a small file (a DIGESTS.asc, a .sig) whole, at most limit bytes.
func Get(ctx context.Context, client *http.Client, url string, limit int64) ([]byte, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	url = redact(url)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{URL: url, Code: resp.StatusCode}
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("GET %s: %d bytes, more than the %d allowed", url, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: more than the %d bytes allowed", url, limit)
	}
	return b, nil
}
