package bench

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
	"testing"
	"time"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// rawStatements are the acquire and release statements of the library,
// captured from the wire with their arguments, to be replayed as raw SQL.
type rawStatements struct {
	acquire, release         string
	acquireArgs, releaseArgs []driver.NamedValue
}

// captureStatements runs one Acquire and Release through the counting
// driver and keeps the two statements sent, so that the raw-SQL baseline
// sends exactly what the library sends, whatever it becomes.
func captureStatements(b *testing.B, table string) rawStatements {
	b.Helper()
	db, cnt, err := sqlcount.Open(srv.DSN())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ev []sqlcount.Event
	cnt.SetObserver(func(e sqlcount.Event) { ev = append(ev, e) })
	c := client(b, db, table, pglock.WithOwner("bench"))
	l, err := c.Acquire("capture")
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Release(l); err != nil {
		b.Fatal(err)
	}
	if len(ev) != 2 {
		b.Fatalf("acquire and release sent %d statements, want 2", len(ev))
	}
	return rawStatements{ev[0].Query, ev[1].Query, ev[0].Args, ev[1].Args}
}

func (s rawStatements) args(nv []driver.NamedValue, name string, rvn int64) []any {
	a := make([]any, len(nv))
	for i, v := range nv {
		a[i] = v.Value
	}
	a[0] = name
	if rvn != 0 {
		a[1] = rvn
	}
	return a
}

// acquireRow sends the captured acquire statement for name and reads its
// first two columns, whether it acquired and the RVN, whatever else the
// statement returns.
func (s rawStatements) acquireRow(db *sql.DB, name string) (acquired bool, rvn int64, err error) {
	rows, err := db.QueryContext(context.Background(), s.acquire, s.args(s.acquireArgs, name, 0)...)
	if err != nil {
		return false, 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return false, 0, err
	}
	if len(cols) < 2 {
		return false, 0, fmt.Errorf("the acquire statement returns %d columns, want at least 2", len(cols))
	}
	dest := make([]any, len(cols))
	dest[0], dest[1] = &acquired, &rvn
	for i := 2; i < len(dest); i++ {
		dest[i] = new(any)
	}
	if rows.Next() {
		err = rows.Scan(dest...)
	}
	if err == nil {
		err = rows.Err()
	}
	return acquired, rvn, err
}

// BenchmarkThroughput measures uncontended Acquire+Release pairs per second
// with 1, 8 and 64 goroutines, each on its own name, against the same two
// statements sent as raw SQL on the same pool: the limit of a design with
// one statement per operation. Library and raw runs alternate in ten
// rounds so that load from elsewhere hits both alike. b.N pairs per side.
func BenchmarkThroughput(b *testing.B) {
	for _, g := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			db := openDB(b, g+8)
			table := newTable(b, db)
			raw := captureStatements(b, table)
			c := client(b, db, table)
			var errMu sync.Mutex
			var firstErr error
			fail := func(err error) {
				errMu.Lock()
				defer errMu.Unlock()
				if firstErr == nil {
					firstErr = err
				}
			}
			lib := func(name string) {
				l, err := c.Acquire(name)
				if err != nil {
					fail(err)
					return
				}
				if err := c.Release(l); err != nil {
					fail(err)
				}
			}
			rawPair := func(name string) {
				acquired, rvn, err := raw.acquireRow(db, name)
				if err == nil && !acquired {
					err = fmt.Errorf("raw acquire of %s: not acquired", name)
				}
				if err != nil {
					fail(err)
					return
				}
				if _, err := db.ExecContext(context.Background(), raw.release, raw.args(raw.releaseArgs, name, rvn)...); err != nil {
					fail(err)
				}
			}
			run := func(f func(string), ops int, prefix string) time.Duration {
				var wg sync.WaitGroup
				start := time.Now()
				for w := range g {
					n := ops / g
					if w < ops%g {
						n++
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						name := fmt.Sprintf("%s-%d", prefix, w)
						for range n {
							f(name)
						}
					}()
				}
				wg.Wait()
				return time.Since(start)
			}
			// Warm the pool and the plans.
			run(lib, 2*g, "lib")
			run(rawPair, 2*g, "raw")
			b.ResetTimer()
			const rounds = 10
			var libTime, rawTime time.Duration
			for r := range rounds {
				ops := b.N / rounds
				if r < b.N%rounds {
					ops++
				}
				if r%2 == 0 {
					libTime += run(lib, ops, "lib")
					rawTime += run(rawPair, ops, "raw")
				} else {
					rawTime += run(rawPair, ops, "raw")
					libTime += run(lib, ops, "lib")
				}
			}
			b.StopTimer()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
			libRate := float64(b.N) / libTime.Seconds()
			rawRate := float64(b.N) / rawTime.Seconds()
			b.ReportMetric(libRate, "lib-ops/s")
			b.ReportMetric(rawRate, "raw-ops/s")
			b.ReportMetric(libRate/rawRate, "ratio")
		})
	}
}
