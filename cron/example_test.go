package cron_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"sync"

	_ "github.com/lib/pq"
	"github.com/robfig/cron/v3"

	"cirello.io/pglock"
	pglockcron "cirello.io/pglock/cron"
)

// Every replica runs the same scheduler; the wrapper runs each tick's job
// on one replica at a time. The job learns of a lost lock through ctx.
func ExampleLocker_Wrap() {
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := pglock.New(db, pglock.WithCustomTable("example_cron"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.TryCreateTable(); err != nil {
		log.Fatal(err)
	}
	defer c.DropTable()
	lk := pglockcron.NewLocker(c)

	var once sync.Once
	ran := make(chan struct{})
	report := pglockcron.ContextFunc(func(ctx context.Context) {
		// Write under the lock; stop when ctx ends (the lock was lost).
		once.Do(func() {
			fmt.Println("report ran")
			close(ran)
		})
	})
	sched := cron.New(cron.WithSeconds())
	if _, err := sched.AddJob("* * * * * *", cron.NewChain(lk.Wrap("report")).Then(report)); err != nil {
		log.Fatal(err)
	}
	sched.Start()
	<-ran
	<-sched.Stop().Done() // waits for a run in progress
	// Output: report ran
}
