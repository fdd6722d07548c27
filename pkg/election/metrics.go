package election

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Election's leadership metrics (docs/metrics.md).
type metrics struct {
	leader        *prometheus.GaugeVec
	leaderChanges *prometheus.CounterVec
}

// newMetrics registers an Election's metrics on reg (nil: nowhere).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Name: "leader",
			Help: "1 while this replica leads DHCP, else 0."}, nil),
		leaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "leader_changes_total",
			Help: "Times this replica won or lost DHCP leadership."}, nil),
	}
	m.leaderChanges.WithLabelValues() // 0 from the start
	mayumetrics.MustRegister(reg, m.leader, m.leaderChanges)
	return m
}
