package replica

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Replica's configuration metrics (docs/metrics.md).
type metrics struct {
	configInfo          *prometheus.GaugeVec
	configMatchesLeader *prometheus.GaugeVec
	fileMatchesLeader   *prometheus.GaugeVec
}

// newMetrics registers a Replica's metrics on reg (nil: nowhere).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "config", Name: "info",
			Help: "Always 1; the hash label is the hash of this replica's cluster configuration."}, []string{"hash"}),
		configMatchesLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "config", Name: "matches_leader",
			Help: "1 if this replica's cluster configuration agrees with the DHCP leader's (or no leader publishes one), else 0."}, nil),
		fileMatchesLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "config", Name: "file_matches_leader",
			Help: "Per local file this replica serves (file: the configuration key naming it), 1 if its SHA-256 is the DHCP leader's (or no leader publishes one), else 0."}, []string{"file"}),
	}
	mayumetrics.MustRegister(reg, m.configInfo, m.configMatchesLeader, m.fileMatchesLeader)
	return m
}
