package pglock

import "time"

// SafetyMarkUnsettled puts l in the state a heartbeat begun at start leaves
// when its statement committed but its answer was lost (the connection broke
// after the commit) and reading the row back failed too. That fault cannot be
// provoked on purpose with a real server (the window is microseconds wide),
// so tests reproduce its state: they move the row as the heartbeat would
// have, then call this.
func SafetyMarkUnsettled(l *Lock, start time.Time) { l.markUnsettled(start) }
