package admin

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"

	"github.com/mayu-boot/mayu/pkg/api"
)

// Reasons a call is refused (mayu_admin_refused_total).
const (
	refusedNoToken   = "no_token"   // no credentials sent
	refusedBadToken  = "bad_token"  // a token that is not in the tokens file
	refusedWrongRole = "wrong_role" // a viewer asking for a change
	refusedBadCert   = "bad_cert"   // mutual TLS: no client certificate, or one the client CA did not sign
)

// isRead tells the calls a viewer may make: they change nothing. Every
// other method is a change, for every route there is or will be: the role
// check and the audit trail go by the method, not by a list of routes
// that a new route could be missing from.
func isRead(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// guard is the admin API's front door around the whole router, so even an
// unknown route says nothing to a caller without credentials: it
// authenticates the caller, refuses a viewer's change, and records every
// change in the audit trail.
func (a *handler) guard(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, reason, msg := authenticate(a.creds.Current(), r)
		if reason != "" {
			a.metrics.refused.WithLabelValues(reason).Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="mayu"`)
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		if isRead(r.Method) {
			router.ServeHTTP(w, r)
			return
		}
		var match mux.RouteMatch
		if !router.Match(r, &match) || match.MatchErr != nil || match.Route == nil {
			router.ServeHTTP(w, r) // 404 or 405: nothing changes
			return
		}
		entry := a.entry(r, who, &match)
		if who.Role != api.RoleAdmin {
			a.metrics.refused.WithLabelValues(refusedWrongRole).Inc()
			// Logged and counted, not written to the audit trail: a
			// refusal changes nothing, and a viewer's token (a dashboard's,
			// say) replaying refused changes must not push the records of
			// real changes out of the trail's count retention, nor cost
			// an etcd write each.
			a.log.Warn("admin change refused to a viewer", "who", who.Name, "via", who.Via,
				"method", r.Method, "route", entry.Route, "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s is a change, and %s %q has the role %s, which may only read; changes need the role admin",
				r.Method, entry.Route, who.Via, who.Name, who.Role))
			return
		}
		if a.audit == nil {
			writeError(w, http.StatusServiceUnavailable, "this replica has no audit trail, so its admin API makes no changes")
			return
		}
		var bodyID string
		entry.Summary, bodyID = summary(r)
		if entry.Machine == "" {
			// A route that names its machine in the body (POST
			// /api/v1/machines) is found by it too.
			entry.Machine = bodyID
		}
		// The record is written before the change and the change is refused
		// when it cannot be: a change without its record would be worse
		// than a change refused (etcd being unwritable refuses the change
		// itself anyway). The result is recorded after the answer; if
		// that fails, the entry stays with status 0, "result unknown".
		begun, err := a.audit.Begin(r.Context(), entry)
		if err != nil {
			a.log.Warn("audit: change refused, its record could not be written", "who", who.Name, "route", entry.Route, "err", err)
			writeError(w, http.StatusServiceUnavailable, "the change was not made: its audit record could not be written: "+err.Error())
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		router.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), callerKey{}, who.Name)))
		begun.Status = sw.status()
		if err := a.audit.Finish(r.Context(), begun); err != nil {
			a.log.Warn("audit: the result of a change could not be recorded", "id", begun.ID, "who", who.Name, "route", entry.Route,
				"status", begun.Status, "err", err)
		}
	})
}

// callerKey carries the caller's name to the handlers of changes (an
// artifact records who added it).
type callerKey struct{}

// callerOf is the name of who makes a change (as the audit trail has it).
func callerOf(r *http.Request) string {
	name, _ := r.Context().Value(callerKey{}).(string)
	return name
}

// authenticate finds who is calling, or why the call is refused (a reason
// and a message that says what to send). A token, when sent, names the
// caller; else a verified client certificate whose subject the tokens
// file gives a role. With a client CA, every call needs a certificate it
// signed, token or not.
func authenticate(c *Credentials, r *http.Request) (who Identity, reason, msg string) {
	if len(c.tokens) == 0 && len(c.subjects) == 0 {
		return who, refusedNoToken, "this mayu replica has no admin token configured, so its admin API refuses every call: set node.admin.tokens_file in its config"
	}
	var subject string
	if c.clientCA != nil {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return who, refusedBadCert, "this admin API requires a client certificate signed by its node.admin.client_ca_file (mayuctl --cert and --key)"
		}
		leaf := r.TLS.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.clientCA, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return who, refusedBadCert, fmt.Sprintf("the client certificate %q was refused: %v", clip(leaf.Subject.String()), err)
		}
		subject = leaf.Subject.String()
	}
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := bearer(h)
		if !ok {
			return who, refusedBadToken, "the Authorization header is not \"Bearer <token>\": send a token of node.admin.tokens_file as \"Authorization: Bearer <token>\""
		}
		if who, ok = c.token(tok); !ok {
			return who, refusedBadToken, "the admin token was refused: send a token of node.admin.tokens_file as \"Authorization: Bearer <token>\""
		}
		return who, "", ""
	}
	if subject != "" {
		if role, ok := c.subjects[subject]; ok {
			return Identity{Name: subject, Via: api.ViaCertificate, Role: role}, "", ""
		}
		return who, refusedNoToken, fmt.Sprintf("no token was sent, and the client certificate's subject %q has no role in node.admin.tokens_file (certificates:)", clip(subject))
	}
	return who, refusedNoToken, "authentication required: send a token of node.admin.tokens_file as \"Authorization: Bearer <token>\""
}

// entry is the audit record of a change: who, what and from where.
func (a *handler) entry(r *http.Request, who Identity, match *mux.RouteMatch) api.AuditEntry {
	route, _ := match.Route.GetPathTemplate()
	machine, err := url.PathUnescape(match.Vars["id"])
	if err != nil {
		machine = match.Vars["id"]
	}
	return api.AuditEntry{Who: who.Name, Via: who.Via, Role: who.Role, Remote: r.RemoteAddr, Replica: a.replica,
		Method: r.Method, Route: route, Path: r.URL.EscapedPath(), Machine: machine}
}

// summary is the start of the query and the body of a change, for the
// audit trail (which clips it), and the "id" the body names if any. The
// body read is put back for the handler.
func summary(r *http.Request) (text, id string) {
	var parts []string
	if q := r.URL.RawQuery; q != "" {
		parts = append(parts, "?"+q)
	}
	if ct := r.Header.Get("Content-Type"); r.Body != nil && r.Body != http.NoBody && ct == "application/octet-stream" {
		// An upload: its bytes are no summary, and are streamed, not read here.
		parts = append(parts, fmt.Sprintf("(%d bytes uploaded)", r.ContentLength))
	} else if r.Body != nil && r.Body != http.NoBody {
		// At most what a handler accepts, plus one byte so that it still
		// sees a body that is too big.
		head, _ := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
		var compact bytes.Buffer
		if json.Compact(&compact, head) == nil {
			head = compact.Bytes()
			var named struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(head, &named) == nil {
				id = named.ID
			}
		}
		if len(head) > 0 {
			parts = append(parts, string(head))
		}
	}
	return strings.Join(parts, " "), id
}

// statusWriter remembers the status of the answer.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
