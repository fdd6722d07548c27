package artifact

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// Where bytes came from (label source).
const (
	fromUpstream = "upstream"
	fromPeer     = "peer"
)

// How a transfer ended (label result).
const (
	resultOK      = "ok"      // verified and in the cache
	resultFailed  = "failed"  // cut short (network, peer, etcd): tried again
	resultRefused = "refused" // verification or space refused it: nothing kept
)

// Why bytes were refused (mayu_artifact_verifications_refused_total).
const (
	refusedSHA256    = "sha256"    // not the SHA-256 the record (or operator) names
	refusedSHA512    = "sha512"    // not the SHA-512 the signed DIGESTS list
	refusedDigests   = "digests"   // the DIGESTS.asc is not signed by the keyring, or lists no SHA-512
	refusedSignature = "signature" // the detached signature does not verify
	refusedNoSpace   = "no_space"  // would not fit the cache
	refusedUpstream  = "upstream"  // upstream answers that it will not serve the file (404, 403, 410...)
)

// metrics are one Manager's (docs/metrics.md).
type metrics struct {
	transfers   *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	missing     prometheus.Gauge
	refused     *prometheus.CounterVec
	peerRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "artifact", Name: "transfers_total",
			Help: "Artifact transfers into this replica's cache, by source (upstream, peer) and result (ok, failed, refused)."}, []string{"source", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "artifact", Name: "received_bytes_total",
			Help: "Bytes of artifacts received, by source (upstream, peer)."}, []string{"source"}),
		missing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "artifact", Name: "missing",
			Help: "Artifacts ready in the catalogue whose bytes this replica does not hold (yet)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "artifact", Name: "verifications_refused_total",
			Help: "Downloads and uploads refused, nothing stored, by reason."}, []string{"reason"}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "artifact", Name: "peer_requests_refused_total",
			Help: "Requests for /peer/artifacts/ refused for want of a valid peer authentication, by reason."}, []string{"reason"}),
	}
	for _, s := range []string{fromUpstream, fromPeer} {
		m.bytes.WithLabelValues(s)
		for _, r := range []string{resultOK, resultFailed, resultRefused} {
			m.transfers.WithLabelValues(s, r)
		}
	}
	for _, r := range []string{refusedSHA256, refusedSHA512, refusedDigests, refusedSignature, refusedNoSpace, refusedUpstream} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range peerRefusals {
		m.peerRefused.WithLabelValues(r)
	}
	mayumetrics.MustRegister(reg, m.transfers, m.bytes, m.missing, m.refused, m.peerRefused)
	return m
}
