package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMachinePath(t *testing.T) {
	for id, want := range map[string]string{
		"sn-1":     "/api/v1/machines/sn-1",
		"a/b":      "/api/v1/machines/a%2Fb",
		"..":       "/api/v1/machines/%2E%2E",
		".":        "/api/v1/machines/%2E",
		"x?y#z":    "/api/v1/machines/x%3Fy%23z",
		"..%2Fcfg": "/api/v1/machines/..%252Fcfg",
	} {
		if got := machinePath(id, ""); got != want {
			t.Errorf("machinePath(%q) = %s, want %s", id, got, want)
		}
	}
}

// Answers that are not the admin API's say so; the token travels as a
// bearer token.
func TestClientAgainstStrangers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"no token"}`))
			return
		}
		switch r.URL.Path {
		case "/api/v1/machines":
			w.Write([]byte("<html>hello</html>"))
		default:
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("upstream down"))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := &Client{BaseURL: srv.URL, Token: "tok"}
	if _, err := c.List(ctx); err == nil || !strings.Contains(err.Error(), "not the mayu admin API") {
		t.Errorf("HTML answer: %v", err)
	}
	var apiErr *Error
	if _, err := c.Get(ctx, "sn-1"); !errors.As(err, &apiErr) || apiErr.Status != 502 || !strings.Contains(apiErr.Message, "upstream down") {
		t.Errorf("502: %v", err)
	}
	if _, err := (&Client{BaseURL: srv.URL, Token: "bad"}).Leases(ctx); !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Message != "no token" {
		t.Errorf("401: %v", err)
	}
}
