package tftp

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Server's TFTP metrics (docs/metrics.md).
type metrics struct {
	transfers *prometheus.CounterVec
	bytes     *prometheus.CounterVec
}

// newMetrics registers a Server's metrics on reg (nil: nowhere).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "tftp", Name: "transfers_total",
			Help: "TFTP read requests, by result (ok, not_found, refused, failed)."}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "tftp", Name: "sent_bytes_total",
			Help: "Bytes of files sent completely over TFTP."}, nil),
	}
	for _, r := range []string{"ok", "not_found", "refused", "failed"} {
		m.transfers.WithLabelValues(r) // 0 from the start
	}
	m.bytes.WithLabelValues()
	mayumetrics.MustRegister(reg, m.transfers, m.bytes)
	return m
}
