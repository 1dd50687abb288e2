package pglock_test

import (
	"fmt"
	"log"

	"cirello.io/pglock"
)

// Client.Stats is a cheap snapshot of counters and timings, safe to read
// from any goroutine. To export it to Prometheus, register the collector of
// the module cirello.io/pglock/prometheus (a module of its own, so that
// this one needs no metrics library):
//
//	reg.MustRegister(pglockprom.NewCollector(c))
//
// With OpenTelemetry, register one asynchronous instrument per field
// (Int64ObservableCounter for the totals, Int64ObservableGauge for Held and
// Listening, Float64ObservableCounter for the durations in seconds) and
// observe a snapshot in the callback.
func ExampleClient_Stats() {
	c, _, cleanup := exampleClient(pglock.WithHeartbeatFrequency(0))
	defer cleanup()

	held, err := c.Acquire("a")
	if err != nil {
		log.Fatal(err)
	}
	l, err := c.Acquire("b")
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	s := c.Stats()
	fmt.Printf("acquired %d, released %d, held %d, lost %d\n", s.Acquired, s.Released, s.Held(), s.Lost)
	_ = held.Close()
	// Output:
	// acquired 2, released 1, held 1, lost 0
}
