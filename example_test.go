package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"time"

	_ "github.com/lib/pq"

	"cirello.io/pglock"
)

// The examples run against the test database: exampleDSN and
// exampleTable (helpers_test.go) stand for your connection string and table
// name, and exampleClient stands for what ExampleNew shows (a pool, a
// client, its table). Each example drops its table at the end.

func ExampleNew() {
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := pglock.New(db,
		pglock.WithCustomTable(exampleTable()),
		pglock.WithLeaseDuration(3*time.Second),
		pglock.WithHeartbeatFrequency(time.Second))
	if err != nil {
		log.Fatal("cannot create lock client:", err)
	}
	if err := c.CreateTable(); err != nil {
		log.Fatal("cannot create table:", err)
	}
	defer c.DropTable()
	fmt.Println("lock table created")
	// Output: lock table created
}

func ExampleClient_Acquire() {
	table := exampleTable()
	c, db, cleanup := exampleClient(pglock.WithCustomTable(table))
	defer cleanup()

	l, err := c.Acquire("invoice-42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("held:", !l.IsReleased())

	// Anyone else trying now fails at once with FailIfLocked.
	other, err := pglock.New(db, pglock.WithCustomTable(table))
	if err != nil {
		log.Fatal(err)
	}
	_, err = other.Acquire("invoice-42", pglock.FailIfLocked())
	fmt.Println("other:", errors.Is(err, pglock.ErrNotAcquired))

	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released:", l.IsReleased())
	fmt.Println("second close:", errors.Is(l.Close(), pglock.ErrLockAlreadyReleased))
	// Output:
	// held: true
	// other: true
	// released: true
	// second close: true
}

func ExampleClient_Do() {
	c, _, cleanup := exampleClient()
	defer cleanup()

	err := c.Do(context.Background(), "nightly-report", func(ctx context.Context, l *pglock.Lock) error {
		// ctx is cancelled if the lock is lost: long work should watch it.
		select {
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		fmt.Println("working under", l.Owner() != "")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// working under true
	// done: <nil>
}

func ExampleClient_Get() {
	c, _, cleanup := exampleClient(pglock.WithOwner("worker-1"))
	defer cleanup()

	l, err := c.Acquire("migration", pglock.WithData([]byte("step 3 of 7")))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	got, err := c.Get("migration")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s held by %s: %s\n", "migration", got.Owner(), got.Data())
	_, err = c.Get("nothing")
	fmt.Println("absent:", errors.Is(err, pglock.ErrLockNotFound))
	// Output:
	// migration held by worker-1: step 3 of 7
	// absent: true
}

func ExampleClient_GetAllLocks() {
	c, _, cleanup := exampleClient(pglock.WithOwner("worker-1"))
	defer cleanup()

	var held []*pglock.Lock
	for _, name := range []string{"b", "a", "c"} {
		l, err := c.Acquire(name, pglock.WithData([]byte("data of "+name)))
		if err != nil {
			log.Fatal(err)
		}
		held = append(held, l)
	}
	locks, err := c.GetAllLocks()
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range locks {
		fmt.Printf("%s %s %q\n", l.Name(), l.Owner(), l.Data())
	}
	for _, l := range held {
		if err := l.Close(); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// a worker-1 "data of a"
	// b worker-1 "data of b"
	// c worker-1 "data of c"
}

func ExampleKeepOnRelease() {
	c, _, cleanup := exampleClient()
	defer cleanup()

	// The data outlives the lock: the next holder reads where the last
	// one stopped.
	l, err := c.Acquire("cursor", pglock.WithData([]byte("offset=1000")), pglock.KeepOnRelease())
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	data, err := c.GetData("cursor")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kept:", string(data))

	l, err = c.Acquire("cursor", pglock.FailIfLocked(), pglock.WithData([]byte("offset=2000")), pglock.ReplaceData(), pglock.KeepOnRelease())
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	data, err = c.GetData("cursor")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("replaced:", string(data))
	// Output:
	// kept: offset=1000
	// replaced: offset=2000
}
