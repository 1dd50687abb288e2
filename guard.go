package pglock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Guard fences the caller's transaction with the lock. Call it inside tx, a
// transaction on the same database as the lock table, before or after the
// writes it protects. It returns an error wrapping ErrLockAlreadyReleased
// when the lock no longer holds its row; the caller must then roll back.
// Otherwise it share-locks the lock's row (SELECT ... FOR SHARE) until tx
// ends, so nobody can take the lock over before tx commits or rolls back:
// writes made in tx commit only if the lock was held throughout.
//
// Cost: one indexed SELECT in tx. While tx stays open, the lock's row cannot
// be updated: the background heartbeat skips it (it would otherwise wait),
// and a waiter's takeover waits for tx to end. A transaction that stays open
// longer than the lease keeps the lock safe while it is open, but the holder
// counts it lost (Done closes) since its heartbeats could not land, and a
// waiter takes it over as soon as tx ends. Keep guarded transactions well
// within lease - heartbeat frequency.
func (l *Lock) Guard(ctx context.Context, tx *sql.Tx) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if tx == nil {
		return &OtherError{errors.New("pglock: Guard needs a transaction")}
	}
	l.opMu.Lock()
	defer l.opMu.Unlock()
	rvn, _, ended := l.state()
	if ended {
		return l.Err()
	}
	var one int
	err := tx.QueryRowContext(ctx, l.client.sql.guard, l.name, rvn).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Under READ COMMITTED the statement saw the latest committed row:
		// the lock is lost. A REPEATABLE READ or SERIALIZABLE transaction
		// may read a snapshot older than the lock's last heartbeat, which
		// says nothing about the lock now.
		var isolation string
		if err := tx.QueryRowContext(ctx, `SELECT current_setting('transaction_isolation')`).Scan(&isolation); err != nil {
			return typeError(fmt.Errorf("pglock: cannot guard %q: %w", l.name, err))
		}
		if isolation != "read committed" {
			return &FailedPreconditionError{fmt.Errorf("pglock: cannot guard %q: the %s transaction's snapshot does not show the lock's current row; roll back and retry, calling Guard first", l.name, isolation)}
		}
		l.end(errStolen)
		return &OtherError{errStolen}
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot guard %q: %w", l.name, err))
	}
	return nil
}
