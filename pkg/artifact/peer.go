package artifact

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Replicas fetch artifacts from each other over their boot HTTP port,
// which machines on the boot network reach too: a peer request must prove
// that its sender knows the cluster secret. The proof is an HMAC of the
// sender's name, the time and the digest asked for, so it opens one
// artifact for a few minutes and nothing else:
//
//	Authorization: Mayu-Peer <replica> <unix seconds> <hex HMAC-SHA256(secret,
//	    "mayu-artifact-peer\x00" + replica + "\x00" + unix + "\x00" + sha256)>

// PeerPath is where a replica serves the artifacts it holds to its peers.
const PeerPath = "/peer/artifacts/"

// peerScheme is the Authorization scheme of peer requests.
const peerScheme = "Mayu-Peer"

// PeerSkew is how far a peer request's time may be from the server's.
const PeerSkew = 5 * time.Minute

// Why a peer request was refused (mayu_artifact_peer_requests_refused_total).
const (
	refusedMissing   = "missing"   // no Mayu-Peer authorization
	refusedMalformed = "malformed" // not three fields, or a bad one
	refusedExpired   = "expired"   // its time is beyond PeerSkew
	refusedMAC       = "mac"       // wrong HMAC: another secret or digest
	refusedNoSecret  = "no_secret" // this replica has no cluster secret (yet)
)

var peerRefusals = []string{refusedMissing, refusedMalformed, refusedExpired, refusedMAC, refusedNoSecret}

// peerMAC binds a request to who asks, whom it asks (a header seen on
// the way cannot be replayed to another replica), when, and for what.
func peerMAC(secret []byte, replica, to, unix, sha256hex string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("mayu-artifact-peer\x00" + replica + "\x00" + to + "\x00" + unix + "\x00" + sha256hex))
	return h.Sum(nil)
}

// PeerAuthorization is the Authorization header value with which replica
// asks the peer named to for sha256hex at time t.
func PeerAuthorization(secret []byte, replica, to string, t time.Time, sha256hex string) string {
	unix := strconv.FormatInt(t.Unix(), 10)
	return peerScheme + " " + replica + " " + unix + " " + hex.EncodeToString(peerMAC(secret, replica, to, unix, sha256hex))
}

// CheckPeerAuthorization checks an Authorization header value for a
// request to the replica named self of sha256hex at time now. It returns the replica that sent it,
// or why it is refused (one of the refused* reasons, for the metric only:
// the requester is told nothing beyond "peer authentication failed").
func CheckPeerAuthorization(secret []byte, value, self, sha256hex string, now time.Time) (replica, refused string) {
	rest, ok := strings.CutPrefix(value, peerScheme+" ")
	if !ok {
		return "", refusedMissing
	}
	f := strings.Fields(rest)
	if len(f) != 3 || CheckName(f[0]) != nil {
		return "", refusedMalformed
	}
	unix, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || strconv.FormatInt(unix, 10) != f[1] {
		return "", refusedMalformed
	}
	got, err := hex.DecodeString(f[2])
	if err != nil || len(got) != sha256.Size {
		return "", refusedMalformed
	}
	if len(secret) == 0 {
		return "", refusedNoSecret
	}
	if d := now.Sub(time.Unix(unix, 0)); d > PeerSkew || d < -PeerSkew {
		return "", refusedExpired
	}
	if !hmac.Equal(got, peerMAC(secret, f[0], self, f[1], sha256hex)) {
		return "", refusedMAC
	}
	return f[0], ""
}

// PeerHandler serves GET and HEAD /peer/artifacts/{sha256} to peer
// replicas that authenticate (Authorization: Mayu-Peer ...), with Range.
func (m *Manager) PeerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PeerPath+"{sha256}", m.servePeer) // GET covers HEAD
	return mux
}

func (m *Manager) servePeer(w http.ResponseWriter, r *http.Request) {
	sha := r.PathValue("sha256")
	if CheckSHA256(sha) != nil {
		http.Error(w, "not an artifact digest", http.StatusNotFound)
		return
	}
	var secret []byte
	if m.o.Secret != nil {
		secret, _ = m.o.Secret(r.Context()) // none: refused below, as no_secret
	}
	replica, refused := CheckPeerAuthorization(secret, r.Header.Get("Authorization"), m.o.Replica, sha, time.Now())
	if refused == refusedMAC && m.o.PreviousSecret != nil {
		// Just after a rotation, a peer that has not seen the new secret
		// yet still signs with the old one.
		if prev, _ := m.o.PreviousSecret(r.Context()); len(prev) > 0 {
			if rep, again := CheckPeerAuthorization(prev, r.Header.Get("Authorization"), m.o.Replica, sha, time.Now()); again == "" {
				replica, refused = rep, ""
			}
		}
	}
	if refused != "" {
		m.met.peerRefused.WithLabelValues(refused).Inc()
		code := http.StatusForbidden
		if refused == refusedMissing || refused == refusedMalformed {
			code = http.StatusUnauthorized
			w.Header().Set("WWW-Authenticate", peerScheme)
		}
		http.Error(w, "peer authentication failed", code)
		return
	}
	f, err := m.o.Cache.Open(sha)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, "this replica does not hold "+sha, http.StatusNotFound)
			return
		}
		m.log.Error("opening an artifact for a peer failed", "sha256", sha, "peer", replica, "err", err)
		http.Error(w, "cannot read the artifact", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "cannot read the artifact", http.StatusInternalServerError)
		return
	}
	w.Header().Set("ETag", ETag(sha))
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", st.ModTime(), f)
}
