package prometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	"cirello.io/pglock"
)

// metric is one exported metric: how it is named and typed, and how it
// reads a Stats snapshot.
type metric struct {
	// field is the pglock.Stats field the metric exports, or "" for one
	// derived from several (Held). A test checks that every field of
	// pglock.Stats has a metric.
	field string
	name  string
	help  string
	kind  prometheus.ValueType
	value func(pglock.Stats) float64
}

// metrics is every metric the collector exports, one per Stats field plus
// Held.
var metrics = []metric{
	{"Acquired", "pglock_acquired_total", "Locks acquired, including takeovers of stale locks.", counter, func(s pglock.Stats) float64 { return float64(s.Acquired) }},
	{"Released", "pglock_released_total", "Locks released by Release, Close or Do.", counter, func(s pglock.Stats) float64 { return float64(s.Released) }},
	{"", "pglock_held", "Locks held now: acquired, and neither released nor lost.", gauge, func(s pglock.Stats) float64 { return float64(s.Held()) }},
	{"Waits", "pglock_waits_total", "Acquisitions that found the lock held and waited.", counter, func(s pglock.Stats) float64 { return float64(s.Waits) }},
	{"WaitTime", "pglock_wait_seconds_total", "Total time of the waits that ended.", counter, func(s pglock.Stats) float64 { return s.WaitTime.Seconds() }},
	{"MaxWait", "pglock_wait_max_seconds", "Longest wait that ended.", gauge, func(s pglock.Stats) float64 { return s.MaxWait.Seconds() }},
	{"Steals", "pglock_steals_total", "Stale locks taken over after a whole lease without a heartbeat.", counter, func(s pglock.Stats) float64 { return float64(s.Steals) }},
	{"Lost", "pglock_lost_total", "Held locks lost before Release.", counter, func(s pglock.Stats) float64 { return float64(s.Lost) }},
	{"Heartbeats", "pglock_heartbeats_total", "Lock refreshes that succeeded.", counter, func(s pglock.Stats) float64 { return float64(s.Heartbeats) }},
	{"HeartbeatFailures", "pglock_heartbeat_failures_total", "Heartbeat statements that failed.", counter, func(s pglock.Stats) float64 { return float64(s.HeartbeatFailures) }},
	{"Notifications", "pglock_notifications_total", "Release notifications received.", counter, func(s pglock.Stats) float64 { return float64(s.Notifications) }},
	{"ListenerConnects", "pglock_listener_connects_total", "LISTEN connections established.", counter, func(s pglock.Stats) float64 { return float64(s.ListenerConnects) }},
	{"Listening", "pglock_listening", "1 while release notifications reach the client, else 0.", gauge, func(s pglock.Stats) float64 { return bool01(s.Listening) }},
	{"Handoffs", "pglock_handoffs_total", "Waits that acquired the lock after a release notification woke them.", counter, func(s pglock.Stats) float64 { return float64(s.Handoffs) }},
	{"HandoffTime", "pglock_handoff_seconds_total", "Total time from a release notification to holding the lock.", counter, func(s pglock.Stats) float64 { return s.HandoffTime.Seconds() }},
	{"MaxHandoff", "pglock_handoff_max_seconds", "Longest handoff.", gauge, func(s pglock.Stats) float64 { return s.MaxHandoff.Seconds() }},
	{"AbandonedStatements", "pglock_abandoned_statements_total", "Statements given up on because their context ended while the driver did not return.", counter, func(s pglock.Stats) float64 { return float64(s.AbandonedStatements) }},
	{"StuckStatements", "pglock_stuck_statements", "Abandoned statements that have not returned yet.", gauge, func(s pglock.Stats) float64 { return float64(s.StuckStatements) }},
}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
