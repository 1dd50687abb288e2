package pglock

import (
	"context"
	"log/slog"

	"cirello.io/pglock/internal/redact"
)

// No message of the client carries a connection string or its password:
// drivers quote the connection string, or the piece they could not parse,
// in their errors. The client knows the connection strings it may meet
// (the one the *sql.DB was opened with, and WithSessionDSN's) and scrubs
// every error its statements return and every record it logs (see
// internal/redact). A scrubbed error still unwraps to the driver's.

// clientSecrets returns the connection strings of a client on db.
func (c *Client) clientSecrets() *redact.Secrets {
	dsn, _ := connString(c.db)
	return redact.New(dsn, c.sessionDSN)
}

// redactLogger returns l, its records scrubbed of secrets.
func redactLogger(l *slog.Logger, s *redact.Secrets) *slog.Logger {
	if s.Empty() || l == discardLogger {
		return l
	}
	return slog.New(&redactHandler{next: l.Handler(), secrets: s})
}

// redactHandler scrubs the message and the attributes of every record
// before next sees it.
type redactHandler struct {
	next    slog.Handler
	secrets *redact.Secrets
}

func (h *redactHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	clean := slog.NewRecord(r.Time, r.Level, h.secrets.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		clean.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, clean)
}

func (h *redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &redactHandler{next: h.next.WithAttrs(clean), secrets: h.secrets}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{next: h.next.WithGroup(name), secrets: h.secrets}
}

// attr scrubs one attribute: strings and errors, also inside groups. Other
// values are the client's own (names, numbers, durations) and hold no
// connection string.
func (h *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.secrets.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = h.attr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.Any(a.Key, h.secrets.Error(err))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
