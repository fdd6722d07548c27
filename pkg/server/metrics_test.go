package server

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

// Two replicas in one process each serve their own metrics on /metrics.
func TestReplicasHaveTheirOwnMetrics(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rs []*Server
	for _, version := range []string{"v1.0.0-a", "v1.0.0-b"} {
		s, err := Start(context.Background(), replicaConfig(t, ""), log, version)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rs = append(rs, s)
	}
	for range 2 {
		get(t, "http://"+rs[0].Addrs["http"]+"/boot.ipxe")
	}
	samples := func(s *Server) map[string]string {
		t.Helper()
		code, body := get(t, "http://"+s.Addrs["metrics"]+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		m := map[string]string{}
		for _, line := range strings.Split(body, "\n") {
			if i := strings.LastIndexByte(line, ' '); i > 0 && !strings.HasPrefix(line, "#") {
				m[line[:i]] = line[i+1:]
			}
		}
		return m
	}
	a, b := samples(rs[0]), samples(rs[1])
	for _, c := range []struct {
		got  map[string]string
		name string
		want string
	}{
		{a, `mayu_build_info{goversion="` + runtime.Version() + `",version="v1.0.0-a"}`, "1"},
		{b, `mayu_build_info{goversion="` + runtime.Version() + `",version="v1.0.0-b"}`, "1"},
		{b, `mayu_build_info{goversion="` + runtime.Version() + `",version="v1.0.0-a"}`, ""},
		{a, `mayu_http_requests_total{code="200",route="/boot.ipxe"}`, "2"},
		{b, `mayu_http_requests_total{code="200",route="/boot.ipxe"}`, ""},
		{a, `mayu_installs_failed_total{reason="installer"}`, "0"},
		{b, `mayu_installs_failed_total{reason="timeout"}`, "0"},
		{b, `mayu_etcd_request_errors_total{method="Txn"}`, "0"},
	} {
		if c.got[c.name] != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got[c.name], c.want)
		}
	}
	if a["go_goroutines"] == "" {
		t.Error("no go_goroutines")
	}
}
