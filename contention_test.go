package pglock_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// countHandler counts slog records whose message contains a word.
type countHandler struct {
	word string
	n    *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.word) {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// contend runs clients×perClient goroutines that each take the one
// lock once, and checks that no two ever hold it at once and that no error
// surfaces. It returns how many serialization failures were retried.
func contend(t *testing.T, dsn string, clients, perClient int) int64 {
	t.Helper()
	db := openDSN(t, dsn)
	var retried atomic.Int64
	logger := pglock.WithLevelLogger(slog.New(countHandler{"serialization failure", &retried}))
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(10 * time.Second), pglock.WithHeartbeatFrequency(time.Second), logger}
	first, table := newClientTable(t, db, opts...)
	cs := []*pglock.Client{first}
	for len(cs) < clients {
		cs = append(cs, sameTable(t, db, table, opts...))
	}

	var (
		inside, maxInside, acquired atomic.Int64
		wg                          sync.WaitGroup
		errs                        = make(chan error, clients*perClient)
		start                       = make(chan struct{})
	)
	ctx := testCtx(t)
	for _, c := range cs {
		for range perClient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := c.AcquireContext(ctx, "contended")
				if err != nil {
					errs <- err
					return
				}
				acquiredAt := time.Now()
				n := inside.Add(1)
				for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
				}
				acquired.Add(1)
				time.Sleep(time.Millisecond) // hold it a little
				inside.Add(-1)
				held := time.Now()
				if err := l.Close(); err != nil {
					errs <- fmt.Errorf("release %v after acquired (%v to release): %w", held.Sub(acquiredAt), time.Since(held), err)
				}
			}()
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.EqualValues(t, 1, maxInside.Load(), "holders overlapped")
	assert.EqualValues(t, clients*perClient, acquired.Load())
	t.Logf("%d acquisitions by %d goroutines on %d clients in %v; %d serialization failures retried",
		acquired.Load(), clients*perClient, clients, time.Since(began).Round(time.Millisecond), retried.Load())
	return retried.Load()
}

func TestCoreContention(t *testing.T) {
	t.Parallel()
	contend(t, srv.DSN(), 4, 26)
}

// TestCoreContentionSerializable: every session SERIALIZABLE by default, as
// some deployments configure it; serialization failures must be retried
// inside the client, never surface.
func TestCoreContentionSerializable(t *testing.T) {
	t.Parallel()
	dsn := dsnWith(srv.DSN(), map[string]string{"options": "-c default_transaction_isolation=serializable"})
	db := openDSN(t, dsn)
	var level string
	require.NoError(t, db.QueryRow(`SHOW default_transaction_isolation`).Scan(&level))
	require.Equal(t, "serializable", level, "the DSN option applies")
	contend(t, dsn, 4, 26)
}
