package pglock_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// logMarker is the data payload the logging tests store: it must never
// appear in any log output, in any encoding.
var logMarker = []byte("SECRET-PAYLOAD-7f3a9c")

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logOwner owns the lock the logged scenario takes first, so that tests can
// find its records by owner.
const logOwner = "logged"

// logScenario drives every logged event through two clients made with
// opts, the first owned by logOwner: acquire with data, heartbeats, a wait
// and a handoff, a missing lock on Get, reads, a stale takeover, and a loss
// by lease expiry.
func logScenario(t *testing.T, opts ...pglock.ClientOption) {
	t.Helper()
	db := openDB(t)
	main := append([]pglock.ClientOption{pglock.WithLeaseDuration(3 * time.Second),
		pglock.WithHeartbeatFrequency(100 * time.Millisecond)}, opts...)
	a, table := newClientTable(t, db, append([]pglock.ClientOption{pglock.WithOwner(logOwner)}, main...)...)
	b := sameTable(t, db, table, main...)

	la, err := a.Acquire("a", pglock.WithData(logMarker), pglock.KeepOnRelease())
	require.NoError(t, err)
	first := la.RecordVersionNumber()
	require.Eventually(t, func() bool { return la.RecordVersionNumber() != first }, 10*time.Second, 10*time.Millisecond)
	got := make(chan error, 1)
	go func() {
		lb, err := b.Acquire("a", pglock.WithData(logMarker), pglock.ReplaceData(), pglock.KeepOnRelease())
		if err == nil {
			err = lb.Close()
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return b.Stats().Waits == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, la.Close())
	require.NoError(t, <-got)
	_, err = a.Get("missing")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)
	_, err = a.GetAllLocks()
	require.NoError(t, err)
	data, err := a.GetData("a")
	require.NoError(t, err)
	require.Equal(t, logMarker, data)

	// A holder without heartbeats goes silent for a lease: a waiter takes
	// the lock over, and the holder counts it lost.
	stale := append([]pglock.ClientOption{pglock.WithLeaseDuration(500 * time.Millisecond),
		pglock.WithHeartbeatFrequency(0)}, opts...)
	s1, table2 := newClientTable(t, db, stale...)
	s2 := sameTable(t, db, table2, stale...)
	l1, err := s1.Acquire("s", pglock.WithData(logMarker))
	require.NoError(t, err)
	l2, err := s2.Acquire("s")
	require.NoError(t, err)
	<-l1.Done()
	require.ErrorIs(t, l1.Close(), pglock.ErrLockAlreadyReleased)
	require.NoError(t, l2.Close())
	require.Equal(t, int64(1), s2.Stats().Steals)
}

// requireNoPayload fails when out holds the marker in any encoding a
// logger could have used for a []byte.
func requireNoPayload(t *testing.T, out string) {
	t.Helper()
	for _, enc := range []string{
		string(logMarker),
		base64.StdEncoding.EncodeToString(logMarker),
		hex.EncodeToString(logMarker),
		decimalBytes(logMarker), // how %v prints a []byte

	} {
		require.NotContains(t, out, enc, "the data payload was logged")
	}
}

// decimalBytes writes b as fmt's %v does, without the brackets.
func decimalBytes(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = strconv.Itoa(int(c))
	}
	return strings.Join(parts, " ")
}

// jsonRecords parses JSON log lines.
func jsonRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), sc.Text())
		recs = append(recs, rec)
	}
	require.NoError(t, sc.Err())
	return recs
}

// embeddedSlog is a LevelLogger that is not a *slog.Logger but embeds
// one, as wrappers often do.
type embeddedSlog struct{ *slog.Logger }

// printfLogger is a pre-slog LevelLogger: printf-style, as the original
// library's users wrote them.
type printfLogger struct {
	mu            sync.Mutex
	debug, errors []string
}

func (l *printfLogger) Debug(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.debug = append(l.debug, fmt.Sprintf(format, args...))
}

func (l *printfLogger) Error(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, fmt.Sprintf(format, args...))
}

// TestLoggers runs the logged scenario through every way of giving the
// client a logger, and checks what each receives: every event, with its
// attributes, at its level, printf-style loggers with their arguments
// formatted, and never the lock's data in any encoding.
func TestLoggers(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  func(*slog.Logger) pglock.ClientOption
	}{
		{"WithSlog", pglock.WithSlog},
		{"WithLevelLogger", func(l *slog.Logger) pglock.ClientOption { return pglock.WithLevelLogger(l) }},
		{"WithLevelLoggerEmbedded", func(l *slog.Logger) pglock.ClientOption {
			return pglock.WithLevelLogger(embeddedSlog{l})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf syncBuffer
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			logScenario(t, tc.opt(logger))
			out := buf.String()
			require.NotContains(t, out, "BADKEY")
			requireNoPayload(t, out)
			byMsg := map[string][]map[string]any{}
			for _, rec := range jsonRecords(t, out) {
				msg, _ := rec["msg"].(string)
				byMsg[msg] = append(byMsg[msg], rec)
				require.NotEqual(t, "ERROR", rec["level"], "nothing in this scenario needs an operator: %v", rec)
				require.NotContains(t, rec, "data")
			}
			for msg, keys := range map[string][]string{
				"lock acquired":          {"lock", "owner", "rvn"},
				"lock is held, waiting":  {"lock", "owner", "holder_rvn"},
				"waited for lock":        {"lock", "owner", "rvn", "waited"},
				"took over a stale lock": {"lock", "owner", "rvn", "stale_rvn", "lease"},
				"lock lost":              {"lock", "owner", "rvn", "since_refresh", "reason"},
				"lock released":          {"lock", "owner", "rvn"},
			} {
				require.NotEmpty(t, byMsg[msg], "no %q record in:\n%s", msg, out)
				for _, key := range keys {
					require.Contains(t, byMsg[msg][0], key, "%q record", msg)
				}
			}
			require.Equal(t, "WARN", byMsg["lock lost"][0]["level"])
			require.Equal(t, "DEBUG", byMsg["lock acquired"][0]["level"])
			require.Equal(t, "DEBUG", byMsg["lock released"][0]["level"])
			// The scenario's first lock is "a", taken and then released by
			// logOwner: the attributes carry both.
			require.Equal(t, "a", byMsg["lock acquired"][0]["lock"], "structured attributes")
			require.Equal(t, logOwner, byMsg["lock acquired"][0]["owner"])
			require.Equal(t, logOwner, byMsg["lock released"][0]["owner"])
			waited, ok := byMsg["waited for lock"][0]["waited"].(float64) // JSON durations are nanoseconds
			require.True(t, ok)
			require.Positive(t, waited)
		})
	}
	t.Run("LevelLogger printf-style", func(t *testing.T) {
		t.Parallel()
		var l printfLogger
		logScenario(t, pglock.WithLevelLogger(&l))
		l.mu.Lock()
		defer l.mu.Unlock()
		require.Empty(t, l.errors, "a routine scenario, a missing lock on Get included, logs no error")
		all := strings.Join(l.debug, "\n")
		require.Contains(t, all, "lock acquired lock=a owner="+logOwner, "logged at Debug")
		require.Contains(t, all, "lock lost lock=s")
		require.NotContains(t, all, "%!", "printf-style arguments are formatted")
		require.NotContains(t, all, "BADKEY")
		requireNoPayload(t, all)
	})
	t.Run("Logger", func(t *testing.T) {
		t.Parallel()
		var buf syncBuffer
		logScenario(t, pglock.WithLogger(log.New(&buf, "", 0)))
		out := buf.String()
		require.Contains(t, out, "lock acquired lock=a owner="+logOwner)
		require.Contains(t, out, "waited for lock lock=a")
		require.Contains(t, out, "lock released lock=a owner="+logOwner)
		requireNoPayload(t, out)
	})
	t.Run("nil loggers are ignored", func(t *testing.T) {
		t.Parallel()
		db := openDB(t)
		exercise := func(t *testing.T, opt pglock.ClientOption) {
			t.Helper()
			c := newClient(t, db, opt, pglock.WithOwner("logged"))
			l, err := c.Acquire("job", pglock.WithData([]byte("secret-data")))
			require.NoError(t, err)
			require.NoError(t, l.Close())
		}
		assert.NotPanics(t, func() {
			exercise(t, pglock.WithLevelLogger(nil))
			exercise(t, pglock.WithLogger(nil))
			exercise(t, pglock.WithLevelLogger((*slog.Logger)(nil)))
			exercise(t, pglock.WithSlog(nil))
		})
	})
}

// TestQuietByDefault runs the logged scenario without a logger and checks
// that nothing reached the process's default loggers. It swaps them, so it
// does not run in parallel.
func TestQuietByDefault(t *testing.T) {
	var slogBuf, logBuf syncBuffer
	prevSlog := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&slogBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	prevOut, prevFlags := log.Writer(), log.Flags()
	// slog.SetDefault routes the log package to the slog handler; set the
	// log package's output after it so both are captured.
	log.SetOutput(&logBuf)
	t.Cleanup(func() {
		slog.SetDefault(prevSlog)
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
	})
	logScenario(t)
	require.Empty(t, slogBuf.String())
	require.Empty(t, logBuf.String())
}
