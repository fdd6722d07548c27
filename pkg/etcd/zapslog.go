package etcd

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore hands the embedded etcd's zap log to mayu's slog handler, so a
// replica writes one log in one format (text or JSON, node log level).
// etcd's own stack traces are dropped: they say where in etcd a message was
// written, which an operator cannot act on, and a clean stop must not look
// like a crash.
type slogCore struct {
	h     slog.Handler
	min   zapcore.Level
	attrs []slog.Attr // from With
	// stopping is set when mayu closes the embedded etcd: etcd then
	// reports each listener it closes as an error ("setting up serving
	// from embedded etcd failed": "use of closed network connection"),
	// and its gRPC server's stop as a warning, which would make every
	// clean stop look like a failure. While stopping, warnings and errors
	// are written at debug level.
	stopping *atomic.Bool
}

// zapToSlog returns a zap logger writing to h, at min and above, each
// record tagged component=etcd, and the switch to set before stopping etcd.
func zapToSlog(h slog.Handler, min zapcore.Level) (*zap.Logger, *atomic.Bool) {
	stopping := new(atomic.Bool)
	return zap.New(&slogCore{h: h, min: min, attrs: []slog.Attr{slog.String("component", "etcd")}, stopping: stopping}), stopping
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= c.min && c.h.Enabled(context.Background(), c.level(l))
}

func (c *slogCore) level(l zapcore.Level) slog.Level {
	// Never DPanic and above: a real failure while stopping (a WAL or
	// backend error) must still say why mayu exits.
	if (l == zapcore.WarnLevel || l == zapcore.ErrorLevel) && c.stopping.Load() {
		return slog.LevelDebug
	}
	return slogLevel(l)
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h, min: c.min, attrs: append(append([]slog.Attr(nil), c.attrs...), attrs(fields)...), stopping: c.stopping}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, c.level(e.Level), e.Message, 0)
	r.AddAttrs(c.attrs...)
	r.AddAttrs(attrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default: // error, and etcd's panic and fatal, which end the process anyway
		return slog.LevelError
	}
}

// attrs turns zap fields into slog attributes, sorted by key, using zap's
// own encoder so every field type (errors, durations, arrays) comes out as
// zap would print it.
func attrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		v := enc.Fields[k]
		if d, ok := v.(time.Duration); ok {
			v = d.String() // as etcd's own log prints it, not nanoseconds
		}
		out = append(out, slog.Any(k, v))
	}
	return out
}
