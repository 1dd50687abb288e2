package pglock

import (
	"fmt"
	"time"
)

// durationError is a lease or heartbeat frequency New refuses. Its message
// names the option at fault and why; it wraps ErrDurationTooSmall.
type durationError struct{ msg string }

func (e *durationError) Error() string { return e.msg }

// Unwrap returns ErrDurationTooSmall.
func (e *durationError) Unwrap() error { return ErrDurationTooSmall }

// checkDurations refuses a lease shorter than MinLeaseDuration, and, with
// heartbeats on (beat > 0), a heartbeat frequency above half the lease.
func checkDurations(lease, beat time.Duration) error {
	switch {
	case lease <= 0:
		return &durationError{fmt.Sprintf("pglock: WithLeaseDuration(%v): the lease must be positive, and at least %v (MinLeaseDuration)", lease, MinLeaseDuration)}
	case lease < MinLeaseDuration:
		return &durationError{fmt.Sprintf("pglock: WithLeaseDuration(%v): the lease must be at least %v (MinLeaseDuration), to outlive the statement that takes a lock", lease, MinLeaseDuration)}
	case beat > 0 && lease < 2*beat:
		return &durationError{fmt.Sprintf("pglock: WithHeartbeatFrequency(%v) is too large for WithLeaseDuration(%v): a lock needs at least two heartbeats per lease; "+
			"make the heartbeat frequency at most %v, or the lease at least %v (0 turns heartbeats off)", beat, lease, lease/2, 2*beat)}
	}
	return nil
}
