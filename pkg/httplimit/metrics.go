package httplimit

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one listener's share of the HTTP limit metrics
// (docs/metrics.md); the listeners of one replica share the collectors,
// told apart by the listener label.
type metrics struct {
	open    prometheus.Gauge
	refused *prometheus.CounterVec // by reason
	dropped *prometheus.CounterVec // by reason
}

// Reasons a connection is refused or a request dropped, exported at 0.
var (
	refuseReasons = []string{"total", "per_address"}
	dropReasons   = []string{"header_timeout", "header_too_large", "stalled_read", "stalled_write"}
)

func newMetrics(reg prometheus.Registerer, listener string) *metrics {
	open := mayumetrics.Shared(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "http", Name: "connections",
		Help: "Open connections, by listener (http: the boot port, admin: the admin API)."}, []string{"listener"}))
	refused := mayumetrics.Shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "http", Name: "connections_refused_total",
		Help: "Connections closed at once, by listener and reason (total: max_connections, per_address: max_connections_per_address)."}, []string{"listener", "reason"}))
	dropped := mayumetrics.Shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "http", Name: "requests_dropped_total",
		Help: "Requests cut or refused by a limit, by listener and reason (header_timeout, header_too_large, stalled_read, stalled_write)."}, []string{"listener", "reason"}))
	m := &metrics{open: open.WithLabelValues(listener), refused: refused.MustCurryWith(prometheus.Labels{"listener": listener}),
		dropped: dropped.MustCurryWith(prometheus.Labels{"listener": listener})}
	for _, r := range refuseReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(r)
	}
	return m
}
