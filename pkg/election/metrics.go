package election

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Election's leadership metrics (docs/metrics.md).
type metrics struct {
	leader        *prometheus.GaugeVec
	leaderChanges *prometheus.CounterVec
	depositions   *prometheus.CounterVec
	resumes       *prometheus.CounterVec
}

// newMetrics registers an Election's metrics on reg (nil: nowhere).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Name: "leader",
			Help: "1 while this replica leads DHCP, else 0."}, nil),
		leaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "leader_changes_total",
			Help: "Times this replica won or lost DHCP leadership."}, nil),
		depositions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "election", Name: "depositions_total",
			Help: "DHCP leaders this replica deposed, by reason: refused (its process was gone), timeout (a majority saw it stop answering) or unreachable (a majority found no TCP handshake at its address)."}, []string{"reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "election", Name: "session_resumes_total",
			Help: "Terms this replica kept after etcd's client ended their session (no keepalive answered for a TTL) because etcd still renewed the lease."}, nil),
	}
	m.leaderChanges.WithLabelValues() // 0 from the start
	m.resumes.WithLabelValues()
	for _, r := range []string{"refused", "timeout", "unreachable"} {
		m.depositions.WithLabelValues(r)
	}
	mayumetrics.MustRegister(reg, m.leader, m.leaderChanges, m.depositions, m.resumes)
	return m
}
