package httpboot

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/digest"
	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
	"github.com/mayu-boot/mayu/pkg/token"
)

// Reasons a node request is refused (mayu_node_refused_total).
const (
	refusedToken    = "token"             // a node call without its token, with a wrong one, or for an unknown id
	refusedIdentity = "identity_mismatch" // a MAC match whose serial or UUID disagrees with the record
	refusedMACTaken = "mac_taken"         // a request's MAC belongs to another machine than its serial's
	refusedAttach   = "installed_mac"     // a new MAC not attached to an installed or running machine
)

// nodeMetrics are one Server's node-trust metrics (docs/metrics.md); the
// request counts are pkg/metrics' HTTP metrics.
type nodeMetrics struct {
	refused     *prometheus.CounterVec
	accepted    *prometheus.CounterVec
	fileChanged *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, files digest.Set) *nodeMetrics {
	m := &nodeMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "node", Name: "refused_total",
			Help: "Node requests refused or not followed, by reason: token, identity_mismatch, mac_taken, installed_mac."}, []string{"reason"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "node", Name: "tokens_accepted_total",
			Help: "Node calls whose token was accepted, by kind: current, previous_secret (within the window after a rotation), legacy (made before etcd schema 2)."}, []string{"kind"}),
		fileChanged: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "boot", Name: "file_changed_refused_total",
			Help: "Requests for a boot file refused (503) because the file changed on disk after this replica hashed it at start, by the configuration key naming it."}, []string{"file"}),
	}
	// Every label value starts at 0, so that increase() sees the first one.
	for k := range files {
		m.fileChanged.WithLabelValues(k)
	}
	for _, r := range []string{refusedToken, refusedIdentity, refusedMACTaken, refusedAttach} {
		m.refused.WithLabelValues(r)
	}
	for _, k := range []string{"current", "previous_secret", "legacy"} {
		m.accepted.WithLabelValues(k)
	}
	mayumetrics.MustRegister(reg, m.refused, m.accepted, m.fileChanged)
	return m
}

func (m *nodeMetrics) accept(match token.Match) {
	kind := "current"
	switch match {
	case token.PreviousSecret:
		kind = "previous_secret"
	case token.LegacyFormat:
		kind = "legacy"
	}
	m.accepted.WithLabelValues(kind).Inc()
}
