package server

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// newRegistry is one replica's metrics registry: the Go runtime's and the
// process's metrics, and mayu_build_info. Start hands it to every package,
// which registers its own metrics there, and serves it on /metrics; two
// replicas in one process each have their own.
func newRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Name: "build_info",
		Help: "Always 1; the labels are this replica's mayu version and the Go version it was built with."}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}), buildInfo)
	return reg
}
