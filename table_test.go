package pglock_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreCreateTable(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := tableName(t)
	c, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err)

	require.NoError(t, c.CreateTable())
	assert.True(t, tableExists(t, db, "", table, "r"), "table")
	assert.True(t, tableExists(t, db, "", table+"_rvn", "S"), "sequence")
	var cycles bool
	require.NoError(t, db.QueryRow(`SELECT seqcycle FROM pg_sequence WHERE seqrelid = $1::regclass`, quote(table+"_rvn")).Scan(&cycles))
	assert.True(t, cycles, "the sequence must CYCLE")

	err = c.CreateTable()
	require.Error(t, err, "CreateTable must fail when the table exists")
	var other *pglock.OtherError
	assert.ErrorAs(t, err, &other)

	require.NoError(t, c.TryCreateTable(), "TryCreateTable is a no-op on an existing table")
	require.NoError(t, c.TryCreateTable())

	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())

	require.NoError(t, c.DropTable())
	assert.False(t, tableExists(t, db, "", table, "r"), "table dropped")
	assert.False(t, tableExists(t, db, "", table+"_rvn", "S"), "sequence dropped with it")
	require.Error(t, c.DropTable(), "DropTable of a missing table fails")
}

func TestCoreTryCreateTableConcurrent(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := tableName(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		c, err := pglock.New(db, pglock.WithCustomTable(table))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- c.TryCreateTable()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	c := sameTable(t, db, table)
	defer func() { require.NoError(t, c.DropTable()) }()
	assert.True(t, tableExists(t, db, "", table, "r"))
	assert.True(t, tableExists(t, db, "", table+"_rvn", "S"))
	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestTryCreateTableCreatesMissingSequence(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	mustExec(t, db, `DROP SEQUENCE `+quote(table+"_rvn"))
	_, err := c.Acquire("a")
	require.Error(t, err, "no sequence, no lock")
	require.NoError(t, c.TryCreateTable())
	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestCreateTableLeavesRoomForHOT: the table is made with the fillfactor
// that keeps heartbeats HOT.
func TestCreateTableLeavesRoomForHOT(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	_, table := newClientTable(t, db)
	var opts []string
	require.NoError(t, db.QueryRow(`SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`,
		quote(table)).Scan(pq.Array(&opts)))
	assert.Contains(t, opts, fmt.Sprintf("fillfactor=%d", pglock.LockTableFillfactor))
}
