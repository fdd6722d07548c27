package dhcp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The lazy logger writes what log.With would, formats nothing for a level
// that is off, and passes attributes and groups added later on.
func TestLazyWith(t *testing.T) {
	var eager, lazy bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	el := slog.New(slog.NewTextHandler(&eager, opts)).With("mac", "52:54:00:aa:00:01", "type", "DISCOVER")
	ll := lazyWith(slog.New(slog.NewTextHandler(&lazy, opts)), "mac", "52:54:00:aa:00:01", "type", "DISCOVER")
	for _, l := range []*slog.Logger{el, ll} {
		l.Debug("dhcp: offer", "ip", "10.0.0.2")
		l.Info("dhcp: ack", "ip", "10.0.0.2")
		l.With("pool", "10.0.0.0/24").WithGroup("g").Warn("dhcp: x", "k", "v")
	}
	if eager.String() != lazy.String() {
		t.Fatalf("lazy:\n%s\neager:\n%s", lazy.String(), eager.String())
	}
	if strings.Contains(lazy.String(), "offer") || !strings.Contains(lazy.String(), "g.k=v") {
		t.Fatalf("output:\n%s", lazy.String())
	}

	// Nothing is formatted for a record that is not written.
	h := &lazyHandler{parent: slog.NewTextHandler(&lazy, opts), args: []any{"mac", "x"}}
	slog.New(h).Debug("off")
	if h.built != nil {
		t.Fatal("attributes formatted for a record below the level")
	}
}
