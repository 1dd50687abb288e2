package pglock_test

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestLargeDataRoundTrip is not parallel: moving 32 MiB keeps the server
// and the race-instrumented driver busy for seconds, which would starve the
// short-lease heartbeats of parallel tests.
func TestLargeDataRoundTrip(t *testing.T) {
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	data := make([]byte, 32<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)

	// Each transfer of 32 MiB takes seconds on a loaded machine: one
	// acquire (up and back) and one read.
	l, err := c.Acquire("big", pglock.WithData(data))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, l.Data()), "Data of the acquired lock, as stored")
	var n int
	require.NoError(t, db.QueryRow(`SELECT octet_length(data) FROM `+quote(table)+` WHERE name = 'big'`).Scan(&n))
	assert.Equal(t, len(data), n, "stored size")
	got, err := c.GetData("big")
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "GetData returns the data byte for byte")
	require.NoError(t, l.Close())

	// Every byte value survives.
	all := make([]byte, 256*4)
	for i := range all {
		all[i] = byte(i)
	}
	l, err = c.Acquire("bytes", pglock.WithData(all))
	require.NoError(t, err)
	got, err = c.GetData("bytes")
	require.NoError(t, err)
	assert.Equal(t, all, got)
	require.NoError(t, l.Close())
}
