package etcd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	lg0, stopping := zapToSlog(h, zapcore.WarnLevel)
	lg := lg0.With(zap.String("member", "m1"))
	lg.Info("not shown: below warn")
	lg.Warn("slow apply", zap.Duration("took", 150*time.Millisecond), zap.Strings("peers", []string{"a", "b"}))
	lg.Error("stopping", zap.Error(errors.New("boom")), zap.Stack("stacktrace"))
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got:\n%s", out)
	}
	for _, want := range []string{`"level":"WARN"`, `"msg":"slow apply"`, `"component":"etcd"`, `"member":"m1"`, `"took":"150ms"`, `"peers":["a","b"]`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("warn line lacks %s: %s", want, lines[0])
		}
	}
	for _, want := range []string{`"level":"ERROR"`, `"error":"boom"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("error line lacks %s: %s", want, lines[1])
		}
	}
	// A stack field is kept as a field only if etcd adds it by hand;
	// zap's automatic stack traces (Entry.Stack) are never written.
	zap.New(lg0.Core(), zap.AddStacktrace(zapcore.ErrorLevel)).Error("with automatic stack")
	if last := buf.String()[len(out):]; strings.Contains(last, "goroutine") || strings.Contains(last, ".go:") {
		t.Errorf("a stack trace was written: %s", last)
	}
	// Stopping: etcd's errors about its closed listeners are debug.
	stopping.Store(true)
	buf.Reset()
	lg.Error("setting up serving from embedded etcd failed.", zap.Error(errors.New("use of closed network connection")))
	lg.Warn("stopping insecure grpc server due to error", zap.Error(errors.New("use of closed network connection")))
	if strings.Count(buf.String(), `"level":"DEBUG"`) != 2 {
		t.Errorf("an error or warning while stopping: %s", buf.String())
	}
	// The handler's level wins too: a warn-level node log drops etcd's info.
	buf.Reset()
	quiet, _ := zapToSlog(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}), zapcore.InfoLevel)
	quiet.Warn("dropped")
	if buf.Len() != 0 {
		t.Errorf("written below the handler's level: %s", buf.String())
	}
}
