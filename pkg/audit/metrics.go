package audit

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are the audit trail's (docs/metrics.md).
type metrics struct {
	writeFailures *prometheus.CounterVec
	pruned        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		writeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "audit", Name: "write_failures_total",
			Help: "Audit entries that could not be written, by step: begin (the change was refused) or finish (its result is not recorded)."}, []string{"step"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "audit", Name: "pruned_total",
			Help: "Audit entries deleted by retention, by limit: age or count."}, []string{"limit"}),
	}
	for _, step := range []string{"begin", "finish"} {
		m.writeFailures.WithLabelValues(step)
	}
	for _, limit := range []string{"age", "count"} {
		m.pruned.WithLabelValues(limit)
	}
	mayumetrics.MustRegister(reg, m.writeFailures, m.pruned)
	return m
}
