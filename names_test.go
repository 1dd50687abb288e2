package pglock_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestLockNameValidation(t *testing.T) {
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
