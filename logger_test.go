package pglock_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// lineRecorder records log lines from any of the logger interfaces.
type lineRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *lineRecorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, s)
}

func (r *lineRecorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// Println makes lineRecorder a pglock.Logger.
func (r *lineRecorder) Println(v ...any) { r.add(fmt.Sprintln(v...)) }

// levelRecorder is a printf-style pglock.LevelLogger.
type levelRecorder struct{ lineRecorder }

func (r *levelRecorder) Debug(msg string, args ...any) {
	r.add("DEBUG " + fmt.Sprintf(msg, args...))
}
func (r *levelRecorder) Error(msg string, args ...any) {
	r.add("ERROR " + fmt.Sprintf(msg, args...))
}

// recordHandler records slog records.
type recordHandler struct{ lines *lineRecorder }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.lines.add(b.String())
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestCoreLoggers(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	exercise := func(t *testing.T, opt pglock.ClientOption) {
		t.Helper()
		c := newClient(t, db, opt, pglock.WithOwner("logged"))
		l, err := c.Acquire("job", pglock.WithData([]byte("secret-data")))
		require.NoError(t, err)
		require.NoError(t, l.Close())
	}

	t.Run("WithLogger", func(t *testing.T) {
		var rec lineRecorder
		exercise(t, pglock.WithLogger(&rec))
		assert.Contains(t, rec.all(), "lock acquired")
		assert.Contains(t, rec.all(), "lock released")
		assert.Contains(t, rec.all(), "logged")
		assert.NotContains(t, rec.all(), "secret-data", "lock data is never logged")
	})
	t.Run("WithLevelLogger printf-style", func(t *testing.T) {
		var rec levelRecorder
		exercise(t, pglock.WithLevelLogger(&rec))
		assert.Contains(t, rec.all(), "DEBUG lock acquired")
		assert.NotContains(t, rec.all(), "%!", "no format verbs left unfilled")
		assert.NotContains(t, rec.all(), "secret-data")
	})
	t.Run("WithLevelLogger *slog.Logger", func(t *testing.T) {
		var rec lineRecorder
		exercise(t, pglock.WithLevelLogger(slog.New(recordHandler{&rec})))
		assert.Contains(t, rec.all(), "DEBUG lock acquired")
		assert.Contains(t, rec.all(), "lock=job", "structured attributes")
		assert.NotContains(t, rec.all(), "secret-data")
	})
	t.Run("WithSlog", func(t *testing.T) {
		var rec lineRecorder
		exercise(t, pglock.WithSlog(slog.New(recordHandler{&rec})))
		assert.Contains(t, rec.all(), "DEBUG lock released")
		assert.Contains(t, rec.all(), "owner=logged")
		assert.NotContains(t, rec.all(), "secret-data")
	})
	t.Run("nil loggers are ignored", func(t *testing.T) {
		assert.NotPanics(t, func() {
			exercise(t, pglock.WithLevelLogger(nil))
			exercise(t, pglock.WithLogger(nil))
			exercise(t, pglock.WithLevelLogger((*slog.Logger)(nil)))
			exercise(t, pglock.WithSlog(nil))
		})
	})
}
