package pglock_test

import (
	"database/sql"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// perfCountedDB opens a pool through the counting driver, closed when t ends.
// Its *sql.DB keeps the connection string, so clients on it LISTEN.
func perfCountedDB(t testing.TB) (*sql.DB, *sqlcount.Counter) {
	t.Helper()
	db, cnt, err := sqlcount.Open(srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db, cnt
}

// perfClient makes a client on table through UnsafeNew (the counting driver
// is not one New trusts). It neither creates nor drops the table.
func perfClient(t testing.TB, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, err := pglock.UnsafeNew(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

// perfTable creates a fresh table through a plain lib/pq client and drops it
// when t ends. It returns the table name and that client's pool.
func perfTable(t testing.TB) (string, *sql.DB) {
	t.Helper()
	db := openDB(t)
	_, table := newClientTable(t, db)
	return table, db
}

// perfRecorder keeps the statements a counting driver reports.
type perfRecorder struct {
	mu     sync.Mutex
	events []sqlcount.Event
}

func (r *perfRecorder) observe(e sqlcount.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *perfRecorder) take() []sqlcount.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// perfParallel runs f(0..n-1) on at most limit goroutines and returns the
// first error. It returns once every call has returned.
func perfParallel(n, limit int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// perfString reads a text value as the driver returned it.
func perfString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
