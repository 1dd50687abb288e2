package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestNewRefusesNilDB(t *testing.T) {
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

func TestNewTrustsOnlyKnownDrivers(t *testing.T) {
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

func TestNewValidatesDurations(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	bad := map[string][]pglock.ClientOption{
		"lease below twice the heartbeat": {pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(600 * time.Millisecond)},
		"zero lease":                      {pglock.WithLeaseDuration(0), pglock.WithHeartbeatFrequency(0)},
		"negative lease":                  {pglock.WithLeaseDuration(-time.Second)},
		"default heartbeat, short lease":  {pglock.WithLeaseDuration(9 * time.Second)},
		"heartbeat off, 1ns lease":        {pglock.WithLeaseDuration(time.Nanosecond), pglock.WithHeartbeatFrequency(0)},
		"heartbeat off, 1ms lease":        {pglock.WithLeaseDuration(time.Millisecond), pglock.WithHeartbeatFrequency(0)},
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
		"heartbeat off, shortest lease":   {pglock.WithLeaseDuration(pglock.MinLeaseDuration), pglock.WithHeartbeatFrequency(0)},
		"negative heartbeat is off":       {pglock.WithLeaseDuration(pglock.MinLeaseDuration), pglock.WithHeartbeatFrequency(-time.Second)},
		"default lease, faster heartbeat": {pglock.WithHeartbeatFrequency(time.Second)},
	}
	for name, opts := range good {
		c, err := pglock.New(db, opts...)
		require.NoError(t, err, name)
		assert.NotNil(t, c, name)
	}
}

func TestNewRefusesBadOwnerAndTableNames(t *testing.T) {
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

func TestOwnerDefaultsPerClientAndIsStored(t *testing.T) {
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

func TestInvalidLockNameRefusedByEveryCall(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c := newClient(t, db)
	bad := map[string]string{
		"256 bytes":     strings.Repeat("n", 256),
		"256 bytes é":   strings.Repeat("é", 128),
		"NUL":           "a\x00b",
		"invalid UTF-8": "a\xffb",
		"empty":         "",
	}
	for what, name := range bad {
		calls := map[string]func() error{
			"Acquire":        func() error { _, err := c.Acquire(name); return err },
			"AcquireContext": func() error { _, err := c.AcquireContext(bg, name, pglock.FailIfLocked()); return err },
			"Do": func() error {
				return c.Do(bg, name, func(context.Context, *pglock.Lock) error { return nil })
			},
			"Get":            func() error { _, err := c.Get(name); return err },
			"GetContext":     func() error { _, err := c.GetContext(bg, name); return err },
			"GetData":        func() error { _, err := c.GetData(name); return err },
			"GetDataContext": func() error { _, err := c.GetDataContext(bg, name); return err },
		}
		for call, f := range calls {
			var err error
			require.NotPanics(t, func() { err = f() }, "%s with %s", call, what)
			assert.ErrorIs(t, err, pglock.ErrInvalidName, "%s with %s", call, what)
		}
	}
	all, err := c.GetAllLocks()
	require.NoError(t, err)
	assert.Empty(t, all, "nothing was written")

	for _, name := range []string{
		strings.Repeat("n", 255),
		strings.Repeat("é", 127), // 254 bytes
		"with space, 'quotes' and \"double quotes\"; DROP TABLE locks; --",
		"ünïcödé ✓ 🔒",
	} {
		l, err := c.Acquire(name, pglock.WithData([]byte(name)))
		require.NoError(t, err, "%q", name)
		got, err := c.Get(name)
		require.NoError(t, err)
		assert.Equal(t, name, string(got.Data()))
		all, err := c.GetAllLocks()
		require.NoError(t, err)
		require.Len(t, all, 1)
		assert.Equal(t, name, all[0].Name())
		require.NoError(t, l.Close())
	}
}

func TestDoHoldsLockWhileFRuns(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("doer"), pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	other := sameTable(t, db, table)

	ran := false
	err := c.Do(bg, "job", func(ctx context.Context, l *pglock.Lock) error {
		ran = true
		assert.False(t, l.IsReleased())
		assert.Equal(t, "payload", string(l.Data()))
		got, err := other.Get("job")
		require.NoError(t, err)
		assert.Equal(t, "doer", got.Owner(), "held while f runs")
		_, err = other.Acquire("job", pglock.FailIfLocked())
		assert.ErrorIs(t, err, pglock.ErrNotAcquired)
		return nil
	}, pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	require.True(t, ran)
	_, err = other.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "released after f")

	sentinel := errors.New("f failed")
	err = c.Do(bg, "job", func(context.Context, *pglock.Lock) error { return sentinel }, pglock.KeepOnRelease())
	require.ErrorIs(t, err, sentinel, "f's error is returned")
	kept, err := other.Get("job")
	require.NoError(t, err, "lock options apply: the row is kept")
	assert.Zero(t, kept.RecordVersionNumber())

	ctx, cancel := context.WithCancel(bg)
	cancel()
	err = c.Do(ctx, "job", func(context.Context, *pglock.Lock) error {
		t.Error("f ran without the lock")
		return nil
	})
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)

	assert.NotPanics(t, func() { assert.Error(t, c.Do(bg, "job", nil)) })
}

// TestDoCancelsCtxOnLoss: the ctx handed to f is cancelled when the lock is
// lost, however it is lost, and as soon as a heartbeat finds the row taken
// over, long before the lease would end.
func TestDoCancelsCtxOnLoss(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	thief := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))

	waitLoss := func(ctx context.Context, l *pglock.Lock) error {
		select {
		case <-ctx.Done():
		case <-time.After(waitBound):
			return errors.New("f's ctx was never cancelled")
		}
		assert.True(t, l.IsReleased(), "cancelled because the lock ended")
		return nil
	}

	t.Run("row taken over", func(t *testing.T) {
		err := c.Do(bg, "a", func(ctx context.Context, l *pglock.Lock) error {
			stealRow(t, db, table, "a")
			return waitLoss(ctx, l)
		})
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "f succeeded but the lock was lost")
	})

	t.Run("heartbeat stopped, lease passed, thief took it", func(t *testing.T) {
		hctx, hcancel := context.WithCancel(bg)
		taken := make(chan *pglock.Lock, 1)
		err := c.Do(bg, "b", func(ctx context.Context, l *pglock.Lock) error {
			hcancel()
			go func() {
				l2, err := thief.AcquireContext(testCtx(t), "b")
				assert.NoError(t, err)
				taken <- l2
			}()
			if err := waitLoss(ctx, l); err != nil {
				return err
			}
			// f goes on until the thief holds the lock.
			select {
			case l2 := <-taken:
				taken <- l2
			case <-time.After(waitBound):
				return errors.New("the thief never took the lock")
			}
			return nil
		}, pglock.WithCustomHeartbeatContext(hctx))
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
		l2 := <-taken
		require.NotNil(t, l2)
		require.NoError(t, l2.Close())
	})

	t.Run("f's error wins over the loss", func(t *testing.T) {
		sentinel := errors.New("stopped")
		err := c.Do(bg, "c", func(ctx context.Context, l *pglock.Lock) error {
			stealRow(t, db, table, "c")
			if err := waitLoss(ctx, l); err != nil {
				return err
			}
			return errors.Join(sentinel, ctx.Err())
		})
		require.ErrorIs(t, err, sentinel)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("taken over, noticed long before the lease ends", func(t *testing.T) {
		const lease, freq = 20 * time.Second, 200 * time.Millisecond
		c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
		running := make(chan *pglock.Lock)
		errc := make(chan error, 1)
		go func() {
			errc <- c.Do(bg, "do-loss", func(ctx context.Context, l *pglock.Lock) error {
				running <- l
				<-ctx.Done()
				return ctx.Err()
			})
		}()
		l := <-running
		stealRow(t, db, table, "do-loss")
		select {
		case err := <-errc:
			require.ErrorIs(t, err, context.Canceled, "Do returned %v", err)
		case <-time.After(lease / 2):
			t.Fatal("f's context was not cancelled after the lock was lost")
		}
		require.True(t, l.IsReleased())
		require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	})
}

// TestDoOutlastingLeaseWithHeartbeatsOff: with heartbeats off, an f that
// outlasts the lease sees its ctx cancelled when the lease lapses, but when
// nobody took the row over meanwhile the release proves nobody else held the
// lock, and Do returns f's nil, as the original did.
func TestDoOutlastingLeaseWithHeartbeatsOff(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = time.Second
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	var lapsed bool
	err := c.Do(testCtx(t), "long-job", func(ctx context.Context, l *pglock.Lock) error {
		select {
		case <-ctx.Done():
			lapsed = true
		case <-time.After(waitBound):
		}
		time.Sleep(lease / 2) // f goes on past the lease
		return nil
	})
	require.NoError(t, err)
	assert.True(t, lapsed, "f's ctx is cancelled when the lease lapses")
	_, err = c.Get("long-job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "the row was released")
}

// TestDoOutlastingLeaseTakenOver: the same f, but another client takes the
// stale lock over while f runs: Do reports the loss.
func TestDoOutlastingLeaseTakenOver(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	err := c.Do(testCtx(t), "long-job", func(ctx context.Context, l *pglock.Lock) error {
		l2, err := other.AcquireContext(testCtx(t), "long-job")
		require.NoError(t, err, "the other client takes the stale lock over")
		require.NoError(t, l2.Close())
		return nil
	})
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
}

func TestGetReadsRowWithoutHoldingIt(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("holder"), pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	reader := sameTable(t, db, table, pglock.WithOwner("reader"))

	for _, get := range []func() error{
		func() error { _, err := reader.Get("absent"); return err },
		func() error { _, err := reader.GetContext(bg, "absent"); return err },
		func() error { _, err := reader.GetData("absent"); return err },
		func() error { _, err := reader.GetDataContext(bg, "absent"); return err },
	} {
		err := get()
		require.ErrorIs(t, err, pglock.ErrLockNotFound)
		var notExist *pglock.NotExistError
		require.ErrorAs(t, err, &notExist)
	}

	l, err := c.Acquire("job", pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	got, err := reader.Get("job")
	require.NoError(t, err)
	assert.Equal(t, "holder", got.Owner())
	assert.Equal(t, "payload", string(got.Data()))
	assert.Equal(t, l.RecordVersionNumber(), got.RecordVersionNumber())
	assert.True(t, got.IsReleased(), "a lock read with Get is not held by the reader")
	assert.ErrorIs(t, got.Close(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, reader.Release(got), pglock.ErrLockAlreadyReleased)
	assert.False(t, l.IsReleased(), "the holder still holds it")
	_, err = reader.Acquire("job", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)

	got, err = reader.GetContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "holder", got.Owner())
	data, err := reader.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))

	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = reader.GetContext(ctx, "job")
	assert.Error(t, err, "an ended ctx reads nothing")
	_, err = reader.GetDataContext(ctx, "job")
	assert.Error(t, err)
	require.NoError(t, l.Close())
}

func TestGetAllLocksListsHeldAndKeptRows(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("holder"), pglock.WithHeartbeatFrequency(0))
	reader := sameTable(t, db, table, pglock.WithOwner("reader"))

	all, err := reader.GetAllLocks()
	require.NoError(t, err)
	assert.Empty(t, all)

	held, err := c.Acquire("b-held", pglock.WithData([]byte("B")))
	require.NoError(t, err)
	kept, err := c.Acquire("a-kept", pglock.WithData([]byte("A")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, kept.Close())
	other, err := reader.Acquire("c-other")
	require.NoError(t, err)

	for _, get := range []func() ([]*pglock.ReadOnlyLock, error){
		reader.GetAllLocks,
		func() ([]*pglock.ReadOnlyLock, error) { return reader.GetAllLocksContext(bg) },
	} {
		all, err := get()
		require.NoError(t, err)
		require.Len(t, all, 3, "held and kept rows alike")
		var names, owners, data []string
		for _, l := range all {
			names = append(names, l.Name())
			owners = append(owners, l.Owner())
			data = append(data, string(l.Data()))
		}
		assert.Equal(t, []string{"a-kept", "b-held", "c-other"}, names)
		assert.Equal(t, []string{"holder", "holder", "reader"}, owners)
		assert.Equal(t, []string{"A", "B", ""}, data)
		assert.Zero(t, all[0].RecordVersionNumber(), "kept row: NULL RVN")
		assert.Equal(t, held.RecordVersionNumber(), all[1].RecordVersionNumber())
	}

	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = reader.GetAllLocksContext(ctx)
	assert.Error(t, err)
	require.NoError(t, held.Close())
	require.NoError(t, other.Close())
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

// TestEmptyOwnerGetsRandomOwner checks that WithOwner("") is accepted, as
// the original library accepted it, and stores a random owner.
func TestEmptyOwnerGetsRandomOwner(t *testing.T) {
	t.Parallel()
	c := newClient(t, openDB(t), pglock.WithOwner(""))
	l, err := c.Acquire("x")
	require.NoError(t, err)
	defer l.Close()
	assert.Regexp(t, `^pglock-[0-9]+$`, l.Owner())
}
