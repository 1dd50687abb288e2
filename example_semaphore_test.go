package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	_ "github.com/lib/pq"

	"cirello.io/pglock"
)

// A semaphore of 2 permits admits two holders at a time: a third try is
// refused until a permit is released. Each permit is a lock row, so
// GetAllLocks lists the holders too.
func ExampleSemaphore() {
	ctx := context.Background()
	c, _, cleanup := exampleClient(pglock.WithOwner("worker-1"))
	defer cleanup()
	jobs := c.NewSemaphore("jobs", 2)

	first, err := jobs.Acquire(ctx, pglock.WithData([]byte("backup")))
	if err != nil {
		log.Fatal(err)
	}
	second, err := jobs.Acquire(ctx, pglock.WithData([]byte("report")))
	if err != nil {
		log.Fatal(err)
	}
	_, err = jobs.Acquire(ctx, pglock.FailIfLocked())
	fmt.Println("third permit refused:", errors.Is(err, pglock.ErrNotAcquired))

	holders, err := jobs.Holders(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range holders {
		fmt.Printf("%s held by %s for %s\n", h.Name(), h.Owner(), h.Data())
	}

	if err := first.Close(); err != nil {
		log.Fatal(err)
	}
	third, err := jobs.Acquire(ctx, pglock.FailIfLocked())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after a release, got", third.Name())
	_ = second.Close()
	_ = third.Close()

	// A client that counts the permits differently is refused.
	_, err = c.NewSemaphore("jobs", 3).Acquire(ctx)
	fmt.Println("3 permits refused:", errors.Is(err, pglock.ErrPermitsMismatch))
	// Output:
	// third permit refused: true
	// jobs#0 held by worker-1 for backup
	// jobs#1 held by worker-1 for report
	// after a release, got jobs#0
	// 3 permits refused: true
}
