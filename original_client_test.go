package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"
)

// origClient plays a client of the original cirello.io/pglock with raw
// SQL of its algorithm, so that rolling upgrades can be tested without
// importing the original module (its module path is this one's).
//   - acquire: nextval, then in a SERIALIZABLE transaction an upsert that
//     takes the row only when its RVN is NULL or still the RVN seen on the
//     previous try, then a read of the row FOR UPDATE; held when the row
//     carries the new RVN. A waiter sleeps one lease between tries.
//   - heartbeat: UPDATE to a fresh RVN WHERE name and RVN match.
//   - release: DELETE WHERE name and RVN match (or RVN set NULL to keep).
type origClient struct {
	db    *sql.DB
	table string // spliced raw into the SQL, as the original did
	owner string
	lease time.Duration
}

func (o *origClient) nextRVN(ctx context.Context) (int64, error) {
	var rvn int64
	err := o.db.QueryRowContext(ctx, `SELECT nextval('`+o.table+`_rvn')`).Scan(&rvn)
	return rvn, err
}

// tryAcquire is the original's storeAcquire, retried on serialization
// failures. seen is the RVN the previous try saw (0 at first).
func (o *origClient) tryAcquire(ctx context.Context, name string, seen int64, data []byte) (acquired bool, actual int64, err error) {
	for {
		acquired, actual, err = o.storeAcquire(ctx, name, seen, data)
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "40001" {
			continue
		}
		return acquired, actual, err
	}
}

func (o *origClient) storeAcquire(ctx context.Context, name string, seen int64, data []byte) (bool, int64, error) {
	rvn, err := o.nextRVN(ctx)
	if err != nil {
		return false, 0, err
	}
	tx, err := o.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		return false, 0, err
	}
	defer func() { _ = tx.Rollback() }()
	_, err = tx.ExecContext(ctx, `
		INSERT INTO `+o.table+`
			("name", "record_version_number", "data", "owner")
		VALUES
			($1, $2, $3, $6)
		ON CONFLICT ("name") DO UPDATE
		SET
			"record_version_number" = $2,
			"data" = CASE
				WHEN $5 THEN $3
				ELSE `+o.table+`."data"
			END,
			"owner" = $6
		WHERE
			`+o.table+`."record_version_number" IS NULL
			OR `+o.table+`."record_version_number" = $4
	`, name, rvn, data, seen, false, o.owner)
	if err != nil {
		return false, 0, err
	}
	var actual sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT "record_version_number" FROM `+o.table+` WHERE name = $1 FOR UPDATE`, name).Scan(&actual)
	if err != nil {
		return false, 0, err
	}
	if actual.Int64 != rvn {
		return false, actual.Int64, nil
	}
	return true, rvn, tx.Commit()
}

// acquire waits as the original did: try, sleep a lease, try again with the
// RVN seen.
func (o *origClient) acquire(ctx context.Context, name string) (int64, error) {
	var seen int64
	for {
		acquired, actual, err := o.tryAcquire(ctx, name, seen, nil)
		if err != nil {
			return 0, err
		}
		if acquired {
			return actual, nil
		}
		seen = actual
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(o.lease):
		}
	}
}

// heartbeat is the original's storeHeartbeat: ok is false when the row no
// longer carries rvn (the lock was lost).
func (o *origClient) heartbeat(ctx context.Context, name string, rvn int64) (newRVN int64, ok bool, err error) {
	newRVN, err = o.nextRVN(ctx)
	if err != nil {
		return 0, false, err
	}
	res, err := o.db.ExecContext(ctx, `UPDATE `+o.table+` SET "record_version_number" = $3 WHERE name = $1 AND "record_version_number" = $2`, name, rvn, newRVN)
	if err != nil {
		return 0, false, err
	}
	n, err := res.RowsAffected()
	return newRVN, n == 1, err
}

// heartbeatEvery runs heartbeat at freq until ctx ends or the lock is lost;
// it returns the last RVN and whether the lock was still held.
func (o *origClient) heartbeatEvery(ctx context.Context, name string, rvn int64, freq time.Duration) (int64, bool) {
	t := time.NewTicker(freq)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rvn, true
		case <-t.C:
		}
		newRVN, ok, err := o.heartbeat(context.Background(), name, rvn)
		switch {
		case err != nil:
			continue // as the original: try again next tick
		case !ok:
			return rvn, false
		}
		rvn = newRVN
	}
}

// release is the original's storeRelease: ok is false when the lock was
// already lost.
func (o *origClient) release(ctx context.Context, name string, rvn int64, keep bool) (ok bool, err error) {
	query := `DELETE FROM ` + o.table + ` WHERE name = $1 AND record_version_number = $2`
	if keep {
		query = `UPDATE ` + o.table + ` SET record_version_number = NULL WHERE name = $1 AND record_version_number = $2`
	}
	res, err := o.db.ExecContext(ctx, query, name, rvn)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// originalTable creates a fresh table and its sequence exactly as the
// original library's CreateTable does, dropped when t ends, and returns the
// table's name.
func originalTable(t *testing.T, db *sql.DB) string {
	t.Helper()
	table := "orig_" + randomHex(6)
	mustExec(t, db, `CREATE TABLE `+table+` (name CHARACTER VARYING(255) PRIMARY KEY, record_version_number BIGINT, data BYTEA, owner CHARACTER VARYING(255))`)
	mustExec(t, db, `CREATE SEQUENCE `+table+`_rvn CYCLE OWNED BY `+table+`.record_version_number`)
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE IF EXISTS ` + table) })
	return table
}
