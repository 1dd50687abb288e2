package pglock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"cirello.io/pglock"
)

// TestDurationErrorsNameTheOption checks that each refused lease or
// heartbeat frequency names the option at fault and why, and wraps
// ErrDurationTooSmall.
func TestDurationErrorsNameTheOption(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	for name, tc := range map[string]struct {
		opts []pglock.ClientOption
		want []string
		not  []string
	}{
		"negative lease": {
			opts: []pglock.ClientOption{pglock.WithLeaseDuration(-5 * time.Second)},
			want: []string{"WithLeaseDuration(-5s)", "must be positive"},
			not:  []string{"heartbeat", "too small"},
		},
		"heartbeat above the lease": {
			opts: []pglock.ClientOption{pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(10 * time.Second)},
			want: []string{"WithHeartbeatFrequency(10s) is too large for WithLeaseDuration(1s)", "at most 500ms", "at least 20s"},
			not:  []string{"too small"},
		},
		"lease too short for a statement": {
			opts: []pglock.ClientOption{pglock.WithLeaseDuration(time.Millisecond), pglock.WithHeartbeatFrequency(0)},
			want: []string{"WithLeaseDuration(1ms)", "at least 100ms", "MinLeaseDuration"},
		},
	} {
		_, err := pglock.New(db, tc.opts...)
		assert.ErrorIs(t, err, pglock.ErrDurationTooSmall, name)
		if err == nil {
			continue
		}
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, name)
		}
		for _, n := range tc.not {
			assert.NotContains(t, err.Error(), n, name)
		}
	}
}
