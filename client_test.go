package pglock_test

import (
	"database/sql"
	"database/sql/driver"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreConstants(t *testing.T) {
	assert.Equal(t, "locks", pglock.DefaultTableName)
	assert.Equal(t, 20*time.Second, pglock.DefaultLeaseDuration)
	assert.Equal(t, 5*time.Second, pglock.DefaultHeartbeatFrequency)
}

func TestCoreNewRefusesNilDB(t *testing.T) {
	t.Parallel()
	c, err := pglock.New(nil)
	assert.Nil(t, c)
	assert.ErrorIs(t, err, pglock.ErrNilDB)
	assert.ErrorIs(t, err, pglock.ErrNotPostgreSQLDriver, "as the original")
	c, err = pglock.UnsafeNew(nil)
	assert.Nil(t, c)
	assert.ErrorIs(t, err, pglock.ErrNilDB)
	assert.ErrorIs(t, err, pglock.ErrNotPostgreSQLDriver, "as the original")
}

func TestCoreNewDriverCheck(t *testing.T) {
	t.Parallel()
	t.Run("not PostgreSQL at all", func(t *testing.T) {
		db, err := sql.Open("pglock-tests-none", "")
		require.NoError(t, err)
		defer db.Close()
		c, err := pglock.New(db)
		assert.Nil(t, c)
		assert.ErrorIs(t, err, pglock.ErrNotPostgreSQLDriver)
		c, err = pglock.UnsafeNew(db, pglock.WithCustomTable(tableName(t)))
		require.NoError(t, err)
		_, err = c.Acquire("x", pglock.FailIfLocked())
		require.Error(t, err, "the fake driver reaches no database")
	})
	t.Run("unknown driver of a real PostgreSQL", func(t *testing.T) {
		db, err := sql.Open("pglock-tests-proxy", srv.DSN())
		require.NoError(t, err)
		defer db.Close()
		c, err := pglock.New(db)
		assert.Nil(t, c)
		assert.ErrorIs(t, err, pglock.ErrNotPostgreSQLDriver)
		require.NoError(t, db.Ping(), "a rejected client must not close the caller's db")

		c, err = pglock.UnsafeNew(db, pglock.WithCustomTable(tableName(t)),
			pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
		require.NoError(t, err)
		require.NoError(t, c.CreateTable())
		defer func() { require.NoError(t, c.DropTable()) }()
		l, err := c.Acquire("x", pglock.WithData([]byte("via an unknown driver")))
		require.NoError(t, err)
		data, err := c.GetData("x")
		require.NoError(t, err)
		assert.Equal(t, "via an unknown driver", string(data))
		require.NoError(t, l.Close())
	})
}

func TestCoreNewDurations(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	bad := map[string][]pglock.ClientOption{
		"lease below twice the heartbeat": {pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(600 * time.Millisecond)},
		"zero lease":                      {pglock.WithLeaseDuration(0), pglock.WithHeartbeatFrequency(0)},
		"negative lease":                  {pglock.WithLeaseDuration(-time.Second)},
		"default heartbeat, short lease":  {pglock.WithLeaseDuration(9 * time.Second)},
	}
	for name, opts := range bad {
		for _, newFn := range []func(*sql.DB, ...pglock.ClientOption) (*pglock.Client, error){pglock.New, pglock.UnsafeNew} {
			c, err := newFn(db, opts...)
			assert.Nil(t, c, name)
			assert.ErrorIs(t, err, pglock.ErrDurationTooSmall, name)
			require.NoError(t, db.Ping(), "%s: a rejected client must not close the caller's db", name)
		}
	}
	good := map[string][]pglock.ClientOption{
		"defaults":                        nil,
		"lease exactly twice":             {pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(500 * time.Millisecond)},
		"heartbeat off, short lease":      {pglock.WithLeaseDuration(time.Millisecond), pglock.WithHeartbeatFrequency(0)},
		"negative heartbeat is off":       {pglock.WithLeaseDuration(time.Millisecond), pglock.WithHeartbeatFrequency(-time.Second)},
		"default lease, faster heartbeat": {pglock.WithHeartbeatFrequency(time.Second)},
	}
	for name, opts := range good {
		c, err := pglock.New(db, opts...)
		require.NoError(t, err, name)
		assert.NotNil(t, c, name)
	}
}

func TestCoreNewBadNames(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	for _, owner := range []string{string(make([]byte, 256)), "a\x00b", "\xff\xfe"} {
		_, err := pglock.New(db, pglock.WithOwner(owner))
		assert.ErrorIs(t, err, pglock.ErrInvalidName, "%q", owner)
	}
	for _, table := range []string{"", "a\x00b", "\xff", string(make([]byte, 64))} {
		_, err := pglock.New(db, pglock.WithCustomTable(table))
		assert.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", table)
	}
	require.NoError(t, db.Ping())
}

func TestCoreOwner(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c1, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	c2 := sameTable(t, db, table, pglock.WithHeartbeatFrequency(0))
	c3 := sameTable(t, db, table, pglock.WithHeartbeatFrequency(0), pglock.WithOwner("worker-7 ✓"))

	l1, err := c1.Acquire("one")
	require.NoError(t, err)
	l2, err := c2.Acquire("two")
	require.NoError(t, err)
	l3, err := c3.Acquire("three")
	require.NoError(t, err)

	defaultOwner := regexp.MustCompile(`^pglock-\d+$`)
	assert.Regexp(t, defaultOwner, l1.Owner())
	assert.Regexp(t, defaultOwner, l2.Owner())
	assert.NotEqual(t, l1.Owner(), l2.Owner(), "each client has its own default owner")
	assert.Equal(t, "worker-7 ✓", l3.Owner())

	got, err := c1.Get("three")
	require.NoError(t, err)
	assert.Equal(t, "worker-7 ✓", got.Owner(), "the owner is stored in the row")
	for _, l := range []*pglock.Lock{l1, l2, l3} {
		require.NoError(t, l.Close())
	}
}

// proxyDriver is a database/sql driver this package does not know: it hands
// connections over to lib/pq, so it reaches a real PostgreSQL. New must
// refuse it, UnsafeNew must accept it.
type proxyDriver struct{}

func (proxyDriver) Open(name string) (driver.Conn, error) { return (&pq.Driver{}).Open(name) }

// noDatabaseDriver is a driver for no database at all.
type noDatabaseDriver struct{}

func (noDatabaseDriver) Open(string) (driver.Conn, error) {
	return nil, fmt.Errorf("tests: this driver talks to no database")
}

func init() {
	sql.Register("pglock-tests-proxy", proxyDriver{})
	sql.Register("pglock-tests-none", noDatabaseDriver{})
}
