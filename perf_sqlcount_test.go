package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock/internal/sqlcount"
)

// TestPerfCountingDriver checks the statement counter the statement-count
// tests rely on: every Exec and Query counts once, prepared or not, and an
// injected failure comes after the statement committed.
func TestPerfCountingDriver(t *testing.T) {
	t.Parallel()
	for _, open := range []struct {
		name string
		fn   func(string) (*sql.DB, *sqlcount.Counter, error)
	}{
		{"Open", sqlcount.Open},
		{"OpenConnector", sqlcount.OpenConnector},
	} {
		t.Run(open.name, func(t *testing.T) {
			db, cnt, err := open.fn(srv.DSN())
			require.NoError(t, err)
			defer db.Close()
			table := tableName(t)
			_, err = db.Exec(`CREATE TABLE ` + table + ` (k int PRIMARY KEY)`)
			require.NoError(t, err)
			defer db.Exec(`DROP TABLE ` + table)
			require.EqualValues(t, 1, cnt.Statements())

			cnt.Reset()
			_, err = db.Exec(`INSERT INTO `+table+` VALUES ($1)`, 1)
			require.NoError(t, err)
			var k int
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = $1`, 1).Scan(&k))
			func() {
				st, err := db.Prepare(`SELECT k FROM ` + table + ` WHERE k = $1`)
				require.NoError(t, err)
				defer func() { require.NoError(t, st.Close()) }()
				require.NoError(t, st.QueryRow(1).Scan(&k))
			}()
			tx, err := db.Begin()
			require.NoError(t, err)
			_, err = tx.Exec(`INSERT INTO `+table+` VALUES ($1)`, 2)
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			require.EqualValues(t, 4, cnt.Statements())

			// A failure injected after the statement: the row is there.
			boom := errors.New("boom")
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			cnt.SetFailAfter(func(string, []driver.NamedValue) error { cancel(); return boom })
			err = db.QueryRowContext(ctx, `INSERT INTO `+table+` VALUES ($1) RETURNING k`, 3).Scan(&k)
			require.ErrorIs(t, err, boom)
			require.Error(t, ctx.Err())
			cnt.SetFailAfter(nil)
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = 3`).Scan(&k))

			var rec recorder
			cnt.SetObserver(rec.observe)
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = $1`, 2).Scan(&k))
			cnt.SetObserver(nil)
			ev := rec.take()
			require.Len(t, ev, 1)
			require.Equal(t, [][]driver.Value{{int64(2)}}, ev[0].Rows)
			require.False(t, ev[0].End.Before(ev[0].Start))
		})
	}
}
