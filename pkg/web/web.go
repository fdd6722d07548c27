// Package web is what mayu's two HTTP front ends, the boot flow
// (httpboot) and the admin API (admin), share: how an error from the
// packages behind them becomes a status code, and how JSON is written.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Status is the HTTP status for an error of the registry, the machine
// rules or etcd:
//
//	400 the request named something malformed (an id, a MAC, a continue
//	    token)
//	404 no such machine
//	410 a paged listing whose revision etcd compacted away: list again
//	409 the request conflicts with the machine's state or another machine
//	    (a transition not allowed now, a MAC or id taken, the range full)
//	503 etcd did not answer, other replicas kept changing the same keys, or
//	    the request was cut short: retry
//	500 anything else, a corrupt record included
//
// Node calls (pkg/httpboot) answer "no such machine" like a wrong token,
// 403, so an unknown id reveals nothing.
func Status(err error) int {
	var (
		corrupt    *registry.CorruptError
		macTaken   *registry.MACTakenError
		transition *machine.TransitionError
		invalid    *identity.Error
	)
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &corrupt):
		return http.StatusInternalServerError
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound
	case errors.As(err, &invalid), errors.Is(err, registry.ErrBadContinue):
		return http.StatusBadRequest
	case errors.Is(err, registry.ErrListExpired):
		return http.StatusGone
	case errors.As(err, &macTaken), errors.As(err, &transition), errors.Is(err, registry.ErrExists),
		errors.Is(err, registry.ErrExhausted), errors.Is(err, registry.ErrTooManyMACs):
		return http.StatusConflict
	case errors.Is(err, state.ErrUnavailable), errors.Is(err, registry.ErrConflict), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// JSON writes v as an indented JSON answer that is never cached or
// sniffed as HTML.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ") // readable with plain curl
	// Never rendered as HTML (nosniff above), so "<secret>" may stay
	// readable instead of becoming \u003csecret\u003e.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client is gone; nothing to tell it
}
