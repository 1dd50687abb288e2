package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	_ "github.com/lib/pq"

	"cirello.io/pglock"
)

// Guard makes writes in the caller's transaction commit only while the lock
// is held: a holder that lost its lock (a long pause, a network partition)
// cannot commit them.
func ExampleLock_Guard_fencing() {
	ctx := context.Background()
	c, db, cleanup := exampleClient()
	defer cleanup()
	if _, err := db.Exec(`CREATE TABLE example_ledger (entry TEXT)`); err != nil {
		log.Fatal(err)
	}
	defer db.Exec(`DROP TABLE example_ledger`)

	l, err := c.AcquireContext(ctx, "ledger")
	if err != nil {
		log.Fatal(err)
	}
	// write commits one entry, fenced by the lock.
	write := func(entry string) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := l.Guard(ctx, tx); err != nil {
			return err // the lock is gone: nothing is written
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO example_ledger VALUES ($1)`, entry); err != nil {
			return err
		}
		return tx.Commit()
	}
	fmt.Println("while held:", write("first"))
	if err := c.Release(l); err != nil {
		log.Fatal(err)
	}
	err = write("second")
	fmt.Println("after release refused:", errors.Is(err, pglock.ErrLockAlreadyReleased))
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM example_ledger`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("entries:", n)
	// Output:
	// while held: <nil>
	// after release refused: true
	// entries: 1
}

// Done tells a holder to stop: it is closed when the lock is released or
// lost, and never while the lock is held.
func ExampleLock_Done_stopWork() {
	c, _, cleanup := exampleClient(pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	defer cleanup()

	l, err := c.Acquire("job")
	if err != nil {
		log.Fatal(err)
	}
	work := time.NewTimer(100 * time.Millisecond) // stands for the job
	select {
	case <-l.Done():
		fmt.Println("lost the lock, stopping:", l.Err())
	case <-work.C:
		fmt.Println("job done while holding the lock")
	}
	if err := c.Release(l); err != nil {
		log.Fatal(err)
	}
	<-l.Done()
	fmt.Println("released:", errors.Is(l.Err(), pglock.ErrLockAlreadyReleased))
	// Output:
	// job done while holding the lock
	// released: true
}
