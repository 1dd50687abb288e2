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

// Two nodes elect a leader. node-1 wins, publishes its address, moves it,
// and steps down; node-2, waiting meanwhile, takes over at once, and an
// observer sees each change in order.
func ExampleElection() {
	ctx := context.Background()
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	newNode := func(owner string) *pglock.Election {
		c, err := pglock.New(db,
			pglock.WithCustomTable("example_election"),
			pglock.WithOwner(owner),
			pglock.WithLeaseDuration(10*time.Second),
			pglock.WithHeartbeatFrequency(2*time.Second))
		if err != nil {
			log.Fatal(err)
		}
		if err := c.TryCreateTable(); err != nil {
			log.Fatal(err)
		}
		return c.NewElection("scheduler")
	}
	node1, node2, observer := newNode("node-1"), newNode("node-2"), newNode("observer")

	show := func(l pglock.Leader) { fmt.Printf("observed: %s at %s\n", l.Owner, l.Value) }
	obsCtx, stopObserving := context.WithCancel(ctx)
	changes := observer.Observe(obsCtx)

	leadership, err := node1.Campaign(ctx, []byte("10.0.0.1:8080"))
	if err != nil {
		log.Fatal(err)
	}
	show(<-changes)

	// node-2 campaigns too, and waits.
	won := make(chan *pglock.Leadership)
	go func() {
		l, err := node2.Campaign(ctx, []byte("10.0.0.2:8080"))
		if err != nil {
			log.Fatal(err)
		}
		won <- l
	}()

	// The leader moves to another port without losing the leadership.
	if err := leadership.Proclaim(ctx, []byte("10.0.0.1:9090")); err != nil {
		log.Fatal(err)
	}
	show(<-changes)

	// It steps down; node-2 takes over at once.
	if err := leadership.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	<-leadership.Done()
	next := <-won
	show(<-changes)

	leader, err := observer.Leader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader: %s at %s\n", leader.Owner, leader.Value)

	if err := next.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = observer.Leader(ctx)
	fmt.Println("after resigning:", errors.Is(err, pglock.ErrNoLeader))

	stopObserving()
	for range changes { // wait for the observer to stop
	}
	if _, err := db.ExecContext(ctx, `DROP TABLE example_election`); err != nil {
		log.Fatal(err)
	}
	// Output:
	// observed: node-1 at 10.0.0.1:8080
	// observed: node-1 at 10.0.0.1:9090
	// observed: node-2 at 10.0.0.2:8080
	// leader: node-2 at 10.0.0.2:8080
	// after resigning: true
}
