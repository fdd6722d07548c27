package metrics

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// InstrumentRouter counts and times every request a router matches, by
// its route template (never the raw path: ids and tokens stay out of
// label values), in mayu_http_requests_total and
// mayu_http_request_duration_seconds on reg. Routers of one replica
// instrumented on the same reg share these metrics.
func InstrumentRouter(r *mux.Router, reg prometheus.Registerer) {
	requests := Shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "mayu", Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests on the boot and admin ports, by route and status code.",
	}, []string{"route", "code"}))
	duration := Shared(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "mayu", Subsystem: "http", Name: "request_duration_seconds",
		Help:    "HTTP request latency by route, until the last byte is written.",
		Buckets: Latency(),
	}, []string{"route"}))
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			route := "unmatched"
			if cur := mux.CurrentRoute(req); cur != nil {
				if tpl, err := cur.GetPathTemplate(); err == nil {
					route = tpl
				}
			}
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			start := time.Now()
			next.ServeHTTP(sw, req)
			duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
			requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		})
	})
}

// statusWriter records the status code. It keeps ReadFrom, so that boot
// files are still sent with sendfile through it.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wroteHeader = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes streaming answers (mayuctl watch) through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
