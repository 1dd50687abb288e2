package pglock_test

import (
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestTryCreateTableWithoutOwnedBy plays a managed PostgreSQL where the lock
// table belongs to one role and the application connects as another, with
// privileges on it: CREATE SEQUENCE ... OWNED BY then fails ("sequence must
// have same owner as table it is linked to"), and TryCreateTable must still
// succeed.
func TestTryCreateTableWithoutOwnedBy(t *testing.T) {
	t.Parallel()
	admin := openDB(t)
	r := randomHex(4)
	owner, app, password := "tests_owner_"+r, "tests_app_"+r, "pw_"+r
	table := tableName(t)
	mustExec(t, admin, `CREATE ROLE `+owner)
	mustExec(t, admin, `CREATE ROLE `+app+` LOGIN PASSWORD '`+password+`'`)
	t.Cleanup(func() {
		for _, q := range []string{
			`DROP TABLE IF EXISTS ` + table,
			`DROP SEQUENCE IF EXISTS ` + table + `_rvn`,
			`DROP OWNED BY ` + app + `, ` + owner,
			`DROP ROLE ` + app,
			`DROP ROLE ` + owner,
		} {
			_, err := admin.Exec(q)
			assert.NoError(t, err, q)
		}
	})
	mustExec(t, admin, `CREATE TABLE `+table+` (
	name CHARACTER VARYING(255) PRIMARY KEY,
	record_version_number BIGINT,
	data BYTEA,
	owner CHARACTER VARYING(255)
)`)
	mustExec(t, admin, `ALTER TABLE `+table+` OWNER TO `+owner)
	mustExec(t, admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON `+table+` TO `+app)
	mustExec(t, admin, `GRANT USAGE, CREATE ON SCHEMA public TO `+app)

	db := openDSN(t, dsnAsUser(srv.DSN(), app, password))
	// The precondition: OWNED BY cannot be used by this role.
	_, err := db.Exec(`CREATE SEQUENCE ` + table + `_probe CYCLE OWNED BY ` + table + `.record_version_number`)
	require.Error(t, err)
	var pqErr *pq.Error
	require.ErrorAs(t, err, &pqErr)
	require.Contains(t, pqErr.Message, "same owner", "the setup must reproduce the managed-PostgreSQL failure")

	c, err := pglock.New(db, pglock.WithCustomTable(table),
		pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, c.TryCreateTable())
	require.NoError(t, c.TryCreateTable(), "and again, now that the sequence exists")
	require.Error(t, c.CreateTable(), "CreateTable still fails on existing objects")
	assert.True(t, tableExists(t, admin, "", table+"_rvn", "S"))
	var owned int
	require.NoError(t, admin.QueryRow(`SELECT count(*) FROM pg_depend WHERE objid = $1::regclass AND deptype = 'a'`, table+"_rvn").Scan(&owned))
	assert.Zero(t, owned, "the sequence was made without OWNED BY")

	l, err := c.Acquire("job", pglock.WithData([]byte("d")))
	require.NoError(t, err)
	other := sameTable(t, db, table)
	_, err = other.Acquire("job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.NoError(t, l.Close())
	l, err = other.Acquire("job", pglock.FailIfLocked())
	require.NoError(t, err)
	require.NoError(t, l.Close())
}
