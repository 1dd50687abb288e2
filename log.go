package pglock

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Logger is the original library's logging interface: every line is handed
// over as one Println call. See WithLogger; prefer WithSlog.
type Logger interface {
	Println(v ...any)
}

// LevelLogger is the original library's logger with two levels, called
// printf-style: msg is a format and args its operands. *slog.Logger has the
// same method set but reads args as key/value pairs; WithLevelLogger
// recognises it (and any logger with a Handler() slog.Handler method) and
// uses it as a structured logger instead, so it never logs "!BADKEY".
type LevelLogger interface {
	Debug(msg string, args ...any)
	Error(msg string, args ...any)
}

// discardLogger is the default: the client logs nothing unless asked to.
var discardLogger = slog.New(discardHandler{})

type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (h discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h discardHandler) WithGroup(string) slog.Handler           { return h }

// lineHandler renders a record as one line, "msg key=value ...", and hands it
// to emit. It adapts the pre-slog logger interfaces.
type lineHandler struct {
	attrs []slog.Attr
	emit  func(level slog.Level, line string)
}

func newPrintlnHandler(l Logger) slog.Handler {
	return &lineHandler{emit: func(_ slog.Level, line string) { l.Println(line) }}
}

func newLevelHandler(l LevelLogger) slog.Handler {
	return &lineHandler{emit: func(level slog.Level, line string) {
		if level >= slog.LevelError {
			l.Error("%s", line)
			return
		}
		l.Debug("%s", line)
	}}
}

func (h *lineHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	h.emit(r.Level, b.String())
	return nil
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &lineHandler{attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...), emit: h.emit}
}

func (h *lineHandler) WithGroup(string) slog.Handler { return h }
