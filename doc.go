// Package pglock is a distributed lock library backed by PostgreSQL.
//
// A Client keeps named locks as rows of one table. A held lock's heartbeat
// bumps the row's record version number (RVN) from a sequence; a waiter takes
// a lock over only when it saw the same RVN stay unchanged for a whole lease,
// timed by its own monotonic clock. No absolute time is stored, so clocks of
// different hosts need not agree.
//
//	db, err := sql.Open("postgres", "postgres://localhost/app?sslmode=disable")
//	if err != nil {
//		return err
//	}
//	c, err := pglock.New(db, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(2*time.Second))
//	if err != nil {
//		return err
//	}
//	if err := c.TryCreateTable(); err != nil {
//		return err
//	}
//	l, err := c.Acquire("customer-42")
//	if err != nil {
//		return err
//	}
//	defer l.Close()
//
// A released lock is handed to a waiting client within milliseconds: the
// release notifies waiters through LISTEN/NOTIFY. A lock is lost when someone
// else took it over, or when no heartbeat succeeded for a whole lease; Done
// is closed then. Guard fences writes made in a PostgreSQL transaction with
// the lock.
package pglock
