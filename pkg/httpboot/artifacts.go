package httpboot

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// Artifacts is what the boot port needs of the artifact catalogue and this
// replica's cache (artifact.Manager).
type Artifacts interface {
	Lookup(name string) (artifact.Record, bool)
	Open(sha256hex string) (*os.File, error)
	Holders(sha256hex string) []artifact.Holder
}

// retryAfter is what a machine is told to wait for an artifact no replica
// can serve yet (seconds): long enough not to hammer, short enough that a
// copy finishing soon is found soon.
const retryAfter = "10"

// Why an artifact request was not served from this replica's cache
// (mayu_http_artifact_elsewhere_total).
const (
	elsewhereRedirect   = "redirect"    // sent to a peer that holds it
	elsewhereNotHeld    = "not_held"    // no replica holds it yet: 503
	elsewhereNotReady   = "not_ready"   // pending or failed in the catalogue: 503
	elsewhereNotCatalog = "not_catalog" // the configuration names an artifact the catalogue lacks: 503
)

type artifactMetrics struct {
	elsewhere *prometheus.CounterVec
}

func newArtifactMetrics(reg prometheus.Registerer) *artifactMetrics {
	m := &artifactMetrics{
		elsewhere: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "http", Name: "artifact_elsewhere_total",
			Help: "Artifact requests this replica did not serve from its cache, by outcome: redirect (to a peer holding it), not_held, not_ready, not_catalog (503 with Retry-After)."},
			[]string{"outcome"}),
	}
	for _, o := range []string{elsewhereRedirect, elsewhereNotHeld, elsewhereNotReady, elsewhereNotCatalog} {
		m.elsewhere.WithLabelValues(o)
	}
	mayumetrics.MustRegister(reg, m.elsewhere)
	return m
}

// source serves what the configuration names for key: a file under the
// files directory, or an artifact.
func (s *Server) source(key, value string) http.HandlerFunc {
	if name, ok := config.ArtifactName(value); ok {
		return func(w http.ResponseWriter, r *http.Request) { s.serveArtifact(w, r, key, name) }
	}
	return s.file(key, value)
}

// artifactByName serves /boot/artifacts/{name}: only the artifacts the
// configuration names (a profile's own OS), not the whole catalogue.
func (s *Server) artifactByName(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	if !slices.Contains(s.cluster.Artifacts(), name) {
		httpError(w, http.StatusNotFound, "no such boot resource: "+clip(r.URL.Path))
		return
	}
	s.serveArtifact(w, r, "artifact "+name, name)
}

// serveArtifact serves verified bytes of the artifact name from this
// replica's cache, with its digest as ETag, so that every replica answers
// the same for the same name. A replica that lacks them never serves other
// bytes: it sends the machine to a peer that holds them, or asks it to come
// back later.
func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, key, name string) {
	if s.artifacts == nil {
		httpError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s names artifact %s, and this replica has no artifact catalogue", key, name))
		return
	}
	rec, ok := s.artifacts.Lookup(name)
	switch {
	case !ok:
		s.artifactMetrics.elsewhere.WithLabelValues(elsewhereNotCatalog).Inc()
		s.log.Error("the configuration names an artifact the catalogue lacks", "key", key, "artifact", name)
		unavailable(w, fmt.Sprintf("%s names artifact %s, which is not in the catalogue (mayuctl artifact add)", key, name))
		return
	case rec.Status != artifact.Ready || rec.SHA256 == "":
		s.artifactMetrics.elsewhere.WithLabelValues(elsewhereNotReady).Inc()
		unavailable(w, fmt.Sprintf("artifact %s is %s, not ready", name, rec.Status))
		return
	}
	f, err := s.artifacts.Open(rec.SHA256)
	if err == nil {
		defer f.Close()
		w.Header().Set("ETag", artifact.ETag(rec.SHA256))
		w.Header().Set("Content-Type", "application/octet-stream")
		// Revalidate: /boot/image names another artifact after a
		// configuration change, and a removed name may be added again.
		// No Last-Modified (the zero time): the cache file's time differs
		// from replica to replica, the digest does not.
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, f)
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("cannot open an artifact from the cache", "artifact", name, "sha256", rec.SHA256, "err", err)
	}
	for _, h := range s.artifacts.Holders(rec.SHA256) {
		if h.Replica == s.replica || h.PeerURL == "" {
			continue
		}
		s.artifactMetrics.elsewhere.WithLabelValues(elsewhereRedirect).Inc()
		s.log.Info("artifact not held here yet: machine sent to a peer", "artifact", name, "peer", h.Replica, "remote", r.RemoteAddr)
		http.Redirect(w, r, h.PeerURL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return
	}
	s.artifactMetrics.elsewhere.WithLabelValues(elsewhereNotHeld).Inc()
	unavailable(w, fmt.Sprintf("artifact %s is not held by any replica reachable now; copying it", name))
}

func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", retryAfter)
	httpError(w, http.StatusServiceUnavailable, msg)
}
