// Package metrics holds what the packages that export Prometheus metrics
// share, and no state: each package defines its own metrics next to the
// code that moves them (dhcp/metrics.go, election/metrics.go, …) and
// registers them on the registry its constructor is given; pkg/server
// makes one registry per replica and serves it on /metrics. Names follow
// Prometheus conventions: namespace mayu, a subsystem per concern, base
// units, _total for counters. docs/metrics.md lists them all; a test checks
// it against what a running replica exports.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Latency returns the buckets of every latency histogram: 0.5 ms to 10 s.
func Latency() []float64 {
	return []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
}

// MustRegister registers cs on reg, panicking on a conflict (two
// instances of one package on one registry is a wiring bug). A nil reg
// registers nowhere: the metrics still count, unseen, which is what unit
// tests want.
func MustRegister(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if reg != nil {
		reg.MustRegister(cs...)
	}
}

// Shared registers c on reg, or returns the identical collector already
// registered there: for metrics that several packages of one replica move
// together (the HTTP metrics of the boot and admin ports).
func Shared[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
