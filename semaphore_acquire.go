package pglock

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/lib/pq"
)

// semRow is one row of the semAcquire statement's answer.
type semRow struct {
	kind     string
	permit   int
	rvn      sql.NullInt64
	data     []byte
	ours     bool
	owner    sql.NullString
	inserted bool
	tookOver bool
}

// attempt sends the semaphore's acquire statement once, for l, taking over
// the permits this client watched stay at one RVN for a lease. On success
// l is renamed to the permit row it took. The holders it finds are
// watched, each under its permit row's name. The result is known only when
// every permit was seen held.
func (s *Semaphore) attempt(ctx context.Context, l *Lock) (attemptResult, error) {
	c := s.client
	stale := s.staleRVNs(c.clock.now())
	start := c.clock.now()
	rows, err := s.tryAcquire(ctx, l, stale)
	if err != nil {
		return attemptResult{}, err
	}
	c.trip.Store(int64(c.clock.now().Sub(start)))
	res := attemptResult{start: start}
	var held []semRow
	for _, r := range rows {
		switch r.kind {
		case "marker":
			if !r.ours {
				return res, nil // created concurrently, not visible yet: look again
			}
			if err := s.checkMarker(r.data); err != nil {
				return res, err
			}
		case "acquired":
			c.live.rename(l, s.permitName(r.permit))
			res.acquired, res.rvn, res.data, res.ours = true, r.rvn.Int64, r.data, r.ours
			res.inserted, res.tookOver = r.inserted, r.tookOver
			if r.tookOver {
				res.stale = sql.NullInt64{Int64: stale[s.permitName(r.permit)], Valid: true}
			}
			return c.renewIfLate(ctx, l, res)
		case "held":
			held = append(held, r)
		}
	}
	now := c.clock.now()
	for _, r := range held {
		c.waits.observe(s.permitName(r.permit), r.rvn.Int64, now)
	}
	if l.maybeTaken {
		if r, ok := s.lostReply(l, held); ok {
			c.live.rename(l, s.permitName(r.permit))
			res.acquired, res.renew, res.rvn, res.ours = true, true, r.rvn.Int64, true
			return c.renewIfLate(ctx, l, res)
		}
	}
	if len(held) == s.permits {
		res.known, res.rvn, res.holder = true, held[0].rvn.Int64, held[0].owner.String
	}
	return res, nil
}

// lostReply finds the permit an earlier attempt of l took before its reply
// was lost: a held row of this client's owner that no other Lock of this
// client holds or may be taking.
func (s *Semaphore) lostReply(l *Lock, held []semRow) (semRow, bool) {
	for _, r := range held {
		if r.owner.String == s.client.owner && !s.client.live.holdsOther(s.permitName(r.permit), l) {
			return r, true
		}
	}
	return semRow{}, false
}

// staleRVNs returns, by permit row name, the RVNs this client watched stay
// the same for a lease.
func (s *Semaphore) staleRVNs(now time.Time) map[string]int64 {
	stale := make(map[string]int64)
	for _, name := range s.permitNames() {
		if rvn, _ := s.client.waits.stale(name, now); rvn.Valid {
			stale[name] = rvn.Int64
		}
	}
	return stale
}

// tryAcquire sends the semAcquire statement, as Client.tryAcquire sends
// the acquire statement: a permit taken by a statement given up on is
// freed as soon as it returns.
func (s *Semaphore) tryAcquire(ctx context.Context, l *Lock, stale map[string]int64) ([]semRow, error) {
	c := s.client
	rvns := make(pq.Int64Array, 0, len(stale))
	for _, rvn := range stale {
		rvns = append(rvns, rvn)
	}
	lane := c.keep.onPool
	if l.waiting {
		lane = c.keep.onOwn // a poll
	}
	var rows []semRow
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			return lane(ctx, func(ctx context.Context, q querier) error {
				return onOneConn(ctx, q, func(q querier) error {
					var err error
					rows, err = s.acquireRows(ctx, q, l, rvns)
					return err
				})
			})
		})
	}, func(err error) {
		for _, r := range rows {
			if err == nil && r.kind == "acquired" {
				c.releaseOrphanRow(s.permitName(r.permit), l.keepOnRelease,
					attemptResult{rvn: r.rvn.Int64, inserted: r.inserted})
			}
		}
	})
	if err != nil {
		return nil, err // a statement left behind may still write rows
	}
	return rows, nil
}

// acquireRows runs the semAcquire statement on q and reads its rows.
func (s *Semaphore) acquireRows(ctx context.Context, q querier, l *Lock, stale pq.Int64Array) ([]semRow, error) {
	c := s.client
	rows, err := q.QueryContext(ctx, c.sql.semAcquire, s.prefix(), s.permits, s.markerName(), s.marker,
		l.data, c.owner, l.replaceData, stale, c.sql.sequence)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []semRow
	for rows.Next() {
		var r semRow
		if err := rows.Scan(&r.kind, &r.permit, &r.rvn, &r.data, &r.ours, &r.owner, &r.inserted, &r.tookOver); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// awaitChance sleeps until a permit may be free: a release of one of the
// permit rows was announced, a watched permit's RVN turns stale, or a poll
// finds a permit free, released or stale. As a lock's waiter does, a
// waiter with data polls with a plain read of the permits, so that its
// data goes to the server only with an attempt that can take one; one
// without data attempts at once, which costs the same.
func (s *Semaphore) awaitChance(ctx context.Context, w *waiter, l *Lock) error {
	for {
		polled, err := s.sleep(ctx, w)
		if err != nil || !polled || len(l.data) == 0 {
			return err
		}
		if s.mayTake(ctx) {
			return nil
		}
	}
}

// mayTake looks at the permits with a plain read, and reports whether one
// may be taken now; a failed read reports true: the attempt that follows
// tells what went wrong.
func (s *Semaphore) mayTake(ctx context.Context) bool {
	free, err := s.peek(ctx)
	return err != nil || free
}

// sleep waits until a release of a permit is announced, a watched permit's
// RVN turns stale, the poll interval passes, or ctx ends. It reports
// whether it woke for the poll alone.
func (s *Semaphore) sleep(ctx context.Context, w *waiter) (polled bool, err error) {
	c := s.client
	d := c.waits.pollInterval(w.polls == 0)
	w.polls++
	now := c.clock.now()
	polled = true
	for _, name := range s.permitNames() {
		if _, staleAt := c.waits.stale(name, now); !staleAt.IsZero() && staleAt.Sub(now) <= d {
			d, polled = staleAt.Sub(now), false
		}
	}
	woke, err := c.sleepFor(ctx, w, d)
	return polled && !woke && err == nil, err
}

// peek reads the permit rows' RVNs and owners on the client's own
// connections, watches the held ones, and reports whether a permit is
// free, released or stale.
func (s *Semaphore) peek(ctx context.Context) (free bool, err error) {
	c := s.client
	held := 0
	err = c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onOwn(ctx, func(ctx context.Context, q querier) error {
			held = 0
			return eachRow(ctx, q, func(rows *sql.Rows) error {
				var (
					name string
					r    rowState
				)
				if err := rows.Scan(&name, &r.rvn, &r.owner); err != nil {
					return err
				}
				if r.rvn.Valid {
					held++
					c.waits.observe(name, r.rvn.Int64, c.clock.now())
				}
				return nil
			}, c.sql.reread, pq.StringArray(s.permitNames()))
		})
	}, nil)
	if err != nil || held < s.permits {
		return true, err
	}
	return len(s.staleRVNs(c.clock.now())) > 0, nil
}

// readNamed reads the rows of names, by name, on the caller's pool.
func (c *Client) readNamed(ctx context.Context, names []string) (map[string]storedRow, error) {
	var out map[string]storedRow
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			out = make(map[string]storedRow)
			return eachRow(ctx, c.db, func(rows *sql.Rows) error {
				var (
					name string
					r    storedRow
				)
				if err := rows.Scan(&name, &r.owner, &r.data, &r.rvn); err != nil {
					return err
				}
				out[name] = r
				return nil
			}, c.sql.readNames, pq.StringArray(names))
		})
	}, nil)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	return out, err
}
