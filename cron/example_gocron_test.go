package cron_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"

	"cirello.io/pglock"
	pglockcron "cirello.io/pglock/cron"
)

// lock and locker have the shape of gocron v2's Lock and Locker, which this
// module does not import: with gocron, return gocron.Lock instead.
type lock interface {
	Unlock(ctx context.Context) error
}

type locker interface {
	Lock(ctx context.Context, key string) (lock, error)
}

// gocronLocker adapts a Locker to gocron v2's Locker. A nil *Held must not
// be returned as a non-nil interface, hence the explicit nil.
type gocronLocker struct{ lk *pglockcron.Locker }

func (g gocronLocker) Lock(ctx context.Context, key string) (lock, error) {
	h, err := g.lk.TryLock(ctx, key)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// TryLock is the lock step of Wrap on its own, for schedulers that take a
// distributed locker, such as gocron v2 (gocron.WithDistributedLocker).
func ExampleLocker_TryLock() {
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := pglock.New(db, pglock.WithCustomTable("example_gocron"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.TryCreateTable(); err != nil {
		log.Fatal(err)
	}
	defer c.DropTable()

	var l locker = gocronLocker{pglockcron.NewLocker(c)}
	ctx := context.Background()
	first, err := l.Lock(ctx, "nightly")
	if err != nil {
		log.Fatal(err)
	}
	_, err = l.Lock(ctx, "nightly")
	fmt.Println("a second Lock fails while held:", err != nil)
	if err := first.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: a second Lock fails while held: true
}
