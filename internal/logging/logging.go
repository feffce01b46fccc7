// Package logging holds what every pgq-go component does the same way
// with its *slog.Logger: the default for a nil logger, and the attribute
// keys of its records.
package logging

import (
	"context"
	"log/slog"
)

// Attribute keys shared by every component's records.
const (
	KeyErr     = "err"     // the error
	KeyBackoff = "backoff" // the pause before the next attempt
)

// Default returns l, or when l is nil a logger that forwards records at
// Warn and above to slog.Default's handler (looked up at each record, so a
// later slog.SetDefault is honoured) and discards the rest.
func Default(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(warnOnly{})
}

// warnOnly forwards records at Warn and above to slog.Default's handler.
type warnOnly struct {
	ops []func(slog.Handler) slog.Handler // WithAttrs/WithGroup, in order
}

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && slog.Default().Handler().Enabled(ctx, l)
}

func (w warnOnly) Handle(ctx context.Context, r slog.Record) error {
	h := slog.Default().Handler()
	for _, op := range w.ops {
		h = op(h)
	}
	return h.Handle(ctx, r)
}

func (w warnOnly) with(op func(slog.Handler) slog.Handler) slog.Handler {
	return warnOnly{ops: append(append([]func(slog.Handler) slog.Handler(nil), w.ops...), op)}
}

func (w warnOnly) WithAttrs(as []slog.Attr) slog.Handler {
	return w.with(func(h slog.Handler) slog.Handler { return h.WithAttrs(as) })
}

func (w warnOnly) WithGroup(name string) slog.Handler {
	return w.with(func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
}
