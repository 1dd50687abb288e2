package pglock_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// safetySteal takes the named lock's row over from another connection, as a
// waiter that wrongly thought the lock stale would: a new record version
// number and another owner.
func safetySteal(t *testing.T, db *sql.DB, table, name string) {
	t.Helper()
	res, err := db.Exec(`UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn'), owner = 'thief' WHERE name = $1`, name)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "no row to steal")
}

// safetyClosed reports whether ch is closed now.
func safetyClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// safetyWait waits for ch to close and returns how long it took, failing t
// after limit.
func safetyWait(t *testing.T, ch <-chan struct{}, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s: not closed after %v", what, limit)
		return 0
	}
}
