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
// when the lock no longer holds its row, and ends the lock (Done closes); the
// caller must then roll back. Otherwise it share-locks the lock's row
// (SELECT ... FOR SHARE) until tx ends, so nobody can take the lock over
// before tx commits or rolls back: writes made in tx commit only if the lock
// was held from its acquisition until tx ended. Any other error (the
// database is unreachable) leaves the lock as it was; roll back all the same.
//
// Under REPEATABLE READ or SERIALIZABLE, tx reads one snapshot, taken by its
// first statement: call Guard first. When the snapshot is older than the
// lock's last heartbeat, Guard cannot see the row as it is now; it then
// returns a FailedPreconditionError and leaves the lock held: roll back and
// retry.
//
// Cost: one round trip with one indexed SELECT. Locking the row writes a
// small WAL record (and a multixact while several transactions guard the same
// lock at once). Guard calls are serialised with the lock's heartbeat and
// Release on the client.
//
// While a guarded transaction is open the lock's row cannot be updated, and:
//   - the background heartbeat skips the row; when skipping it again would
//     let half the lease pass without a refresh, it waits for the row
//     instead, and new Guard calls on the lock wait for that heartbeat;
//   - a takeover of the row (once it went stale, or just after a release)
//     waits for the transaction to end, FailIfLocked ones too; an acquire
//     attempt that sees the row held does not touch it and never waits;
//   - Release and SendHeartbeat of the lock wait for the transaction to
//     end: do not call them, nor Guard on a second transaction, from a
//     goroutine that keeps a guarded transaction of the same lock open;
//   - a transaction open for longer than the lease keeps the lock safe while
//     it is open, but the holder counts the lock lost (Done closes) since no
//     heartbeat could land, and a waiter that watched the row for a lease
//     takes it over as soon as the transaction ends.
//
// Keep guarded transactions well within the lease less one heartbeat
// interval. A holder that stops with a guarded transaction open keeps every
// waiter out until the server ends that transaction: set PostgreSQL's
// idle_in_transaction_session_timeout to bound it.
//
// The share lock belongs to the (sub)transaction that ran Guard: a ROLLBACK
// TO SAVEPOINT that undoes the Guard call releases it, and the rest of tx
// is no longer fenced. Guard cannot detect that; call it outside any
// savepoint that may be rolled back to, or again after the rollback.
func (l *Lock) Guard(ctx context.Context, tx *sql.Tx) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if tx == nil {
		return &OtherError{errors.New("pglock: Guard needs a transaction")}
	}
	if err := l.op.lock(ctx); err != nil {
		return contextError(ctx, fmt.Errorf("pglock: cannot guard %q: %w", l.name, err))
	}
	defer l.op.unlock()
	ctx, cancel := l.withinLease(ctx)
	defer cancel()
	err := l.guard(ctx, tx)
	if errors.Is(err, sql.ErrNoRows) && !l.unsettledSince().IsZero() {
		// The row may carry the RVN of a heartbeat of unknown outcome.
		held, merr := l.client.moved(ctx, l)
		if merr != nil {
			return fmt.Errorf("pglock: cannot guard %q: %w", l.name, merr)
		}
		if held {
			err = l.guard(ctx, tx)
		}
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return l.guardMissed(ctx, tx)
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot guard %q: %w", l.name, err))
	}
	return nil
}

// guard share-locks l's row at the RVN l knows, inside tx, returning
// within ctx whatever the driver does.
func (l *Lock) guard(ctx context.Context, tx *sql.Tx) error {
	held, ended := l.state()
	if ended {
		return l.Err()
	}
	return l.client.calls.Run(ctx, func(ctx context.Context) error {
		var one int
		return tx.QueryRowContext(ctx, l.client.sql.guard, l.name, held.rvn, l.owner).Scan(&one)
	}, nil)
}

// guardMissed handles a Guard that found no row at the lock's RVN. Under
// READ COMMITTED the statement saw the latest committed row: the lock is
// lost. A REPEATABLE READ or SERIALIZABLE transaction may read a snapshot
// older than the lock's last heartbeat, which says nothing about the lock
// now.
func (l *Lock) guardMissed(ctx context.Context, tx *sql.Tx) error {
	var isolation string
	err := l.client.calls.Run(ctx, func(ctx context.Context) error {
		return tx.QueryRowContext(ctx, l.client.sql.isolation).Scan(&isolation)
	}, nil)
	if err != nil {
		return typeError(fmt.Errorf("pglock: cannot guard %q: %w", l.name, err))
	}
	if isolation != "read committed" {
		return &FailedPreconditionError{fmt.Errorf("pglock: cannot guard %q: the %s transaction's snapshot does not show the lock's current row; roll back and retry, calling Guard first", l.name, isolation)}
	}
	l.end(errStolen)
	return &OtherError{errStolen}
}
