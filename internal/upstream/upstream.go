// Package upstream is the artifact upstream of the tests and benchmarks: an
// HTTP file server for one directory, like the web server of a release
// directory (Flatcar's, say), that tells a test what it was asked for.
//
//   - Files are served with http.ServeContent: Range and If-Range work, and
//     every file carries a strong ETag made of its modification time and
//     size (nginx's form), so a client can resume a broken download.
//
//   - One line per request goes to the log (the command writes it to
//     stdout) once the answer is over, with the bytes that really left:
//
//     GET "/big.img" range="bytes=1048576-" status=206 sent=208666624 full=false
//
//     full=true means this one answer carried the whole file (a 200, or a
//     206 from byte 0 to the last). ParseLog reads such lines back.
//
//   - GET /stats answers JSON {path: {requests, full, bytes}}: requests
//     counted when they arrive, bytes as they leave (each write counted
//     when it returns: a test can wait for a transfer to be under way, then
//     kill the client), full downloads when they end. A file named "stats" at the top of the directory is hidden
//     by it. Requests to /stats and /rate are not logged.
//
//   - A rate (bytes/s per answer, which is per connection: HTTP/1.1 sends one
//     answer at a time) slows every answer down, so that a test can kill a
//     client mid-transfer. POST /rate?bytes=N changes it at run time (0:
//     unlimited), also for the answers in flight; an unthrottled answer goes
//     out with sendfile.
//
// The command internal/cmd/upstream runs it inside a network namespace.
package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config says what a Server serves and how.
type Config struct {
	Dir  string    // the directory served; nothing outside it is reachable
	Rate int64     // bytes/s per answer; 0: unlimited
	Log  io.Writer // one line per request; nil: none
}

// PathStats is what happened to one path, as GET /stats reports it.
type PathStats struct {
	Requests int64 `json:"requests"` // requests for it, counted on arrival
	Full     int64 `json:"full"`     // answers that carried the whole file
	Bytes    int64 `json:"bytes"`    // body bytes sent, counted as they leave
}

// Server serves a directory; see the package comment.
type Server struct {
	root *os.Root
	rate atomic.Int64

	logMu sync.Mutex
	log   io.Writer

	mu    sync.Mutex
	stats map[string]*PathStats
}

// New opens cfg.Dir; Close releases it.
func New(cfg Config) (*Server, error) {
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("upstream: rate %d bytes/s is negative", cfg.Rate)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	s := &Server{root: root, log: cfg.Log, stats: map[string]*PathStats{}}
	s.rate.Store(cfg.Rate)
	return s, nil
}

// Close releases the directory.
func (s *Server) Close() error { return s.root.Close() }

// SetRate changes the rate (bytes/s per answer, 0: unlimited), also for the
// answers in flight.
func (s *Server) SetRate(bytesPerSecond int64) { s.rate.Store(max(bytesPerSecond, 0)) }

// Stats returns a copy of the counters, by URL path.
func (s *Server) Stats() map[string]PathStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]PathStats, len(s.stats))
	for p, st := range s.stats {
		out[p] = PathStats{Requests: st.Requests, Full: st.Full, Bytes: atomic.LoadInt64(&st.Bytes)}
	}
	return out
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/stats":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.Stats())
		return
	case "/rate":
		if r.Method == http.MethodPost {
			n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "want POST /rate?bytes=N, N >= 0", http.StatusBadRequest)
				return
			}
			s.SetRate(n)
			fmt.Fprintf(w, "rate %d bytes/s\n", n)
			return
		}
	}
	s.serveFile(w, r)
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	urlPath := path.Clean("/" + r.URL.Path)
	st := s.count(urlPath)
	cw := &countingWriter{ResponseWriter: w, stats: st, status: http.StatusOK}
	var size int64 = -1
	defer func() { s.logRequest(r, urlPath, cw, size) }()

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		cw.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	f, err := s.root.Open(strings.TrimPrefix(urlPath, "/"))
	if err != nil {
		cw.WriteHeader(statusOf(err))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		cw.WriteHeader(http.StatusNotFound) // no directory listings
		return
	}
	size = fi.Size()
	// A strong validator, so that If-Range can resume with it; the form
	// nginx uses (mtime and size in hex).
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
	var out http.ResponseWriter = cw
	if s.rate.Load() > 0 {
		out = &throttledWriter{cw: cw, rate: &s.rate, done: r.Context().Done()}
	}
	http.ServeContent(out, r, "", fi.ModTime(), f)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	default:
		return http.StatusNotFound // an escape from the root, a bad name
	}
}

func (s *Server) count(urlPath string) *PathStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats[urlPath]
	if st == nil {
		st = &PathStats{}
		s.stats[urlPath] = st
	}
	st.Requests++
	return st
}

// logRequest writes the request's line and counts a full download.
func (s *Server) logRequest(r *http.Request, urlPath string, cw *countingWriter, size int64) {
	full := r.Method == http.MethodGet && size >= 0 && cw.sent == size && coversAll(cw, size)
	if full {
		s.mu.Lock()
		cw.stats.Full++
		s.mu.Unlock()
	}
	if s.log == nil {
		return
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.log, "%s %q range=%q status=%d sent=%d full=%t\n",
		r.Method, urlPath, r.Header.Get("Range"), cw.status, cw.sent, full)
}

// coversAll: the answer was the whole file, a 200 or a 206 of one range
// from the first byte to the last.
func coversAll(cw *countingWriter, size int64) bool {
	switch cw.status {
	case http.StatusOK:
		return true
	case http.StatusPartialContent:
		return cw.Header().Get("Content-Range") == fmt.Sprintf("bytes 0-%d/%d", size-1, size)
	}
	return false
}

// countingWriter records the status and counts the body bytes that left.
// ReadFrom keeps sendfile: http.ServeContent copies the file through it.
type countingWriter struct {
	http.ResponseWriter
	stats       *PathStats
	status      int
	wroteHeader bool
	sent        int64
}

func (c *countingWriter) WriteHeader(code int) {
	if !c.wroteHeader {
		c.status, c.wroteHeader = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.wroteHeader = true
	n, err := c.ResponseWriter.Write(p)
	c.add(int64(n))
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	c.wroteHeader = true
	n, err := io.Copy(c.ResponseWriter, r) // the server's own ReadFrom: sendfile
	c.add(n)
	return n, err
}

func (c *countingWriter) add(n int64) {
	c.sent += n
	atomic.AddInt64(&c.stats.Bytes, n)
}

// throttledWriter paces the body at the server's rate, read again for
// every chunk so that SetRate reaches answers in flight. It has no
// ReadFrom (the countingWriter is a field, not embedded, so that its
// ReadFrom is not promoted): io.Copy hands it 32 KiB buffers to pace.
type throttledWriter struct {
	cw    *countingWriter
	rate  *atomic.Int64
	done  <-chan struct{}
	start time.Time
	paced int64 // bytes sent since start at the current rate
	at    int64 // the rate start and paced belong to
}

func (t *throttledWriter) Header() http.Header  { return t.cw.Header() }
func (t *throttledWriter) WriteHeader(code int) { t.cw.WriteHeader(code) }

func (t *throttledWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		rate := t.rate.Load()
		if rate <= 0 {
			n, err := t.cw.Write(p)
			return total + n, err
		}
		if rate != t.at || t.start.IsZero() {
			t.start, t.paced, t.at = time.Now(), 0, rate
		}
		chunk := min(int64(len(p)), min(max(rate/20, 1), 64<<10))
		n, err := t.cw.Write(p[:chunk])
		total += n
		if err != nil {
			return total, err
		}
		if f, ok := t.cw.ResponseWriter.(http.Flusher); ok {
			f.Flush() // on the wire now, not when the buffer fills
		}
		p = p[chunk:]
		t.paced += int64(n)
		due := t.start.Add(time.Duration(float64(t.paced) / float64(rate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-t.done:
				timer.Stop()
				return total, errors.New("upstream: client gone")
			}
		}
	}
	return total, nil
}

// Request is one line of the log.
type Request struct {
	Method string
	Path   string
	Range  string // the Range header, "" without one
	Status int
	Sent   int64 // body bytes that left
	Full   bool  // the whole file in this one answer
}

var logLine = regexp.MustCompile(`^([A-Z]+) ("(?:[^"\\]|\\.)*") range=("(?:[^"\\]|\\.)*") status=(\d+) sent=(\d+) full=(true|false)$`)

// ParseLog reads the request lines out of a log (the command's output);
// other lines (its start-up line, say) are skipped.
func ParseLog(log string) []Request {
	var out []Request
	for _, line := range strings.Split(log, "\n") {
		m := logLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		p, err1 := strconv.Unquote(m[2])
		rg, err2 := strconv.Unquote(m[3])
		status, err3 := strconv.Atoi(m[4])
		sent, err4 := strconv.ParseInt(m[5], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			continue
		}
		out = append(out, Request{Method: m[1], Path: p, Range: rg, Status: status, Sent: sent, Full: m[6] == "true"})
	}
	return out
}

// FullDownloads counts the answers in reqs that carried the whole file at
// urlPath.
func FullDownloads(reqs []Request, urlPath string) int {
	n := 0
	for _, r := range reqs {
		if r.Path == urlPath && r.Full {
			n++
		}
	}
	return n
}

// DecodeStats reads a GET /stats answer.
func DecodeStats(r io.Reader) (map[string]PathStats, error) {
	var out map[string]PathStats
	if err := json.NewDecoder(r).Decode(&out); err != nil {
		return nil, fmt.Errorf("upstream stats: %w", err)
	}
	return out, nil
}
