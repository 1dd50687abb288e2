package pglock_test

import (
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"cirello.io/pglock"
)

// writePrometheus writes a Stats snapshot in the Prometheus text exposition
// format, by hand: this package pulls in no metrics library. Serve it from
// an http.Handler on /metrics, reading c.Stats() on each scrape:
//
//	http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
//		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
//		writePrometheus(w, "orders", c.Stats())
//	})
//
// With OpenTelemetry, register one asynchronous instrument per field
// (Int64ObservableCounter for the totals, Int64ObservableGauge for Held and
// Listening, Float64ObservableCounter for the durations in seconds) and
// observe the same snapshot in the callback.
func writePrometheus(w io.Writer, client string, s pglock.Stats) {
	metric := func(name, typ, help string, value float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s{client=%q} %g\n", name, help, name, typ, name, client, value)
	}
	summary := func(name, help string, sum time.Duration, count int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s summary\n", name, help, name)
		fmt.Fprintf(w, "%s_sum{client=%q} %g\n%s_count{client=%q} %d\n", name, client, sum.Seconds(), name, client, count)
	}
	bool01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	metric("pglock_acquired_total", "counter", "Locks acquired.", float64(s.Acquired))
	metric("pglock_released_total", "counter", "Locks released.", float64(s.Released))
	metric("pglock_held", "gauge", "Locks held now.", float64(s.Held()))
	summary("pglock_wait_seconds", "Time acquisitions waited for a holder.", s.WaitTime, s.Waits)
	metric("pglock_wait_max_seconds", "gauge", "Longest wait so far.", s.MaxWait.Seconds())
	summary("pglock_handoff_seconds", "Time from a release notification to holding the lock.", s.HandoffTime, s.Handoffs)
	metric("pglock_steals_total", "counter", "Stale locks taken over.", float64(s.Steals))
	metric("pglock_lost_total", "counter", "Held locks lost.", float64(s.Lost))
	metric("pglock_heartbeats_total", "counter", "Lock refreshes that succeeded.", float64(s.Heartbeats))
	metric("pglock_heartbeat_failures_total", "counter", "Heartbeat statements that failed.", float64(s.HeartbeatFailures))
	metric("pglock_notifications_total", "counter", "Release notifications received.", float64(s.Notifications))
	metric("pglock_listener_connects_total", "counter", "LISTEN connections established.", float64(s.ListenerConnects))
	metric("pglock_listening", "gauge", "1 while release notifications arrive.", bool01(s.Listening))
}

// Client.Stats is a cheap snapshot of counters and timings, safe to read
// from any goroutine. This example exports it in the Prometheus text format.
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
	writePrometheus(os.Stdout, "orders", c.Stats())
	_ = held.Close()
	// Output:
	// # HELP pglock_acquired_total Locks acquired.
	// # TYPE pglock_acquired_total counter
	// pglock_acquired_total{client="orders"} 2
	// # HELP pglock_released_total Locks released.
	// # TYPE pglock_released_total counter
	// pglock_released_total{client="orders"} 1
	// # HELP pglock_held Locks held now.
	// # TYPE pglock_held gauge
	// pglock_held{client="orders"} 1
	// # HELP pglock_wait_seconds Time acquisitions waited for a holder.
	// # TYPE pglock_wait_seconds summary
	// pglock_wait_seconds_sum{client="orders"} 0
	// pglock_wait_seconds_count{client="orders"} 0
	// # HELP pglock_wait_max_seconds Longest wait so far.
	// # TYPE pglock_wait_max_seconds gauge
	// pglock_wait_max_seconds{client="orders"} 0
	// # HELP pglock_handoff_seconds Time from a release notification to holding the lock.
	// # TYPE pglock_handoff_seconds summary
	// pglock_handoff_seconds_sum{client="orders"} 0
	// pglock_handoff_seconds_count{client="orders"} 0
	// # HELP pglock_steals_total Stale locks taken over.
	// # TYPE pglock_steals_total counter
	// pglock_steals_total{client="orders"} 0
	// # HELP pglock_lost_total Held locks lost.
	// # TYPE pglock_lost_total counter
	// pglock_lost_total{client="orders"} 0
	// # HELP pglock_heartbeats_total Lock refreshes that succeeded.
	// # TYPE pglock_heartbeats_total counter
	// pglock_heartbeats_total{client="orders"} 0
	// # HELP pglock_heartbeat_failures_total Heartbeat statements that failed.
	// # TYPE pglock_heartbeat_failures_total counter
	// pglock_heartbeat_failures_total{client="orders"} 0
	// # HELP pglock_notifications_total Release notifications received.
	// # TYPE pglock_notifications_total counter
	// pglock_notifications_total{client="orders"} 0
	// # HELP pglock_listener_connects_total LISTEN connections established.
	// # TYPE pglock_listener_connects_total counter
	// pglock_listener_connects_total{client="orders"} 0
	// # HELP pglock_listening 1 while release notifications arrive.
	// # TYPE pglock_listening gauge
	// pglock_listening{client="orders"} 0
}
