package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// adminMetrics are the admin API's own (docs/metrics.md); its requests are
// counted with the boot port's (mayu_http_requests_total).
type adminMetrics struct {
	refused *prometheus.CounterVec
	reloads *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *adminMetrics {
	m := &adminMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "admin", Name: "refused_total",
			Help: "Admin API calls refused, by reason: no_token, bad_token, wrong_role (a viewer asking for a change), bad_cert."}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "admin", Name: "credential_reloads_total",
			Help: "Reloads of the admin tokens file and TLS files (SIGHUP), by result: ok or failed (the previous ones stay)."}, []string{"result"}),
	}
	for _, r := range []string{refusedNoToken, refusedBadToken, refusedWrongRole, refusedBadCert} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.reloads.WithLabelValues(r)
	}
	mayumetrics.MustRegister(reg, m.refused, m.reloads)
	return m
}
