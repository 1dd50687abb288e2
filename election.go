package pglock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNoLeader is returned by Election.Leader when nobody leads the election:
// its row is absent, or was released with KeepOnRelease.
var ErrNoLeader = &NotExistError{errors.New("pglock: election has no leader")}

// Election is a leader election among the clients of one table. It is the
// lock of the same name: the leader is the lock's holder, and its value is
// the lock's data, so tools that read locks (GetAllLocks, `pglock ls`) show
// the leader too. An Election holds no state of its own and is safe for
// concurrent use.
type Election struct {
	c    *Client
	name string
}

// NewElection returns the election called name, kept in the client's table.
// Every candidate and observer of one election uses the same name and table,
// and the same lease duration. The name is checked by the first call that
// uses it.
func (c *Client) NewElection(name string) *Election {
	return &Election{c: c, name: name}
}

// Name returns the election's name.
func (e *Election) Name() string { return e.name }

// Leader is who leads an election, as read from the database.
type Leader struct {
	Owner string // the leading client's owner (WithOwner)
	Value []byte // the value the leader published with Campaign or Proclaim
	RVN   int64  // the record version number of the leader's lock when read
}

// Campaign blocks until this client leads the election or ctx ends. The
// client then holds the election's lock and publishes value, for example
// its address, which Leader and Observe report. Waiting candidates take over
// at once when the leader resigns, and a lease after its last heartbeat when
// it dies.
//
// ctx bounds only the campaign: once elected, the leadership lasts until
// Resign or until it is lost, whatever becomes of ctx. opts are passed to
// AcquireContext after WithCustomHeartbeatContext(context.WithoutCancel(ctx)),
// and before WithData(value) and ReplaceData(). FailIfLocked makes Campaign
// return ErrNotAcquired at once when someone else leads;
// WithCustomHeartbeatContext bounds how long the leader's heartbeat runs.
// A client made with heartbeats off (WithHeartbeatFrequency(0)) must call
// SendHeartbeat with Leadership.Lock() within every lease to stay leader.
//
// When ctx ends first it returns an error wrapping ErrNotAcquired and
// ctx.Err(), and leaves nothing held.
func (e *Election) Campaign(ctx context.Context, value []byte, opts ...LockOption) (*Leadership, error) {
	all := make([]LockOption, 0, len(opts)+4)
	all = append(all, WithCustomHeartbeatContext(context.WithoutCancel(ctx)))
	all = append(all, opts...)
	all = append(all, WithData(value), ReplaceData(), announceAcquisition)
	l, err := e.c.AcquireContext(ctx, e.name, all...)
	if err != nil {
		return nil, err
	}
	return &Leadership{e: e, lock: l, value: l.Data()}, nil
}

// Leader reads who leads the election now, without campaigning. It returns
// ErrNoLeader when nobody does. A leader that died without resigning is
// still reported until a candidate takes over, a lease after its last
// heartbeat: no absolute time is stored that would tell a reader it died.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	return e.leader(ctx, e.c.keep.onPool)
}

// leader is Leader, reading on lane.
func (e *Election) leader(ctx context.Context, lane func(context.Context, func(context.Context, querier) error) error) (Leader, error) {
	if err := validName(e.name); err != nil {
		return Leader{}, &OtherError{err}
	}
	r, err := e.c.readRowOn(ctx, e.name, lane)
	switch {
	case errors.Is(err, ErrLockNotFound):
		return Leader{}, ErrNoLeader
	case err != nil:
		return Leader{}, fmt.Errorf("pglock: cannot read the leader of %q: %w", e.name, err)
	case !r.rvn.Valid:
		return Leader{}, ErrNoLeader
	}
	return Leader{Owner: r.owner.String, Value: r.data, RVN: r.rvn.Int64}, nil
}

// Observe reports the election's leaders, in order, until ctx ends; the
// channel is closed then. It sends the current leader first, if there is
// one, and then each new one: a leader is sent when its owner or value
// differs from the last one sent, or when the election was seen without a
// leader in between. A vacancy itself is not sent.
//
// All Observe calls of one election on one Client share one reader. It
// reads the leader when a notification tells of a change (a candidate's
// acquisition or takeover, a resignation, a Proclaim), and every quarter
// lease to catch what no notification tells (a leader that died and was
// taken over a lease later, clients of the original library): changes
// closer together than a read may be coalesced into the last of them. A
// receiver that falls behind coalesces changes the same way, and never
// blocks the election. Read errors (the database is unreachable) are
// retried at the same pace. The goroutine behind the channel exits when
// ctx ends or the client is closed; receive until the channel is closed to
// wait for it.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	ch := make(chan Leader)
	w, ok := e.c.waits.watchFor(e)
	if !ok {
		close(ch) // the client is closed
		return ch
	}
	ctx, stop := e.c.untilClosed(ctx)
	go func() {
		defer e.c.observers.Done()
		defer stop()
		defer e.c.waits.unwatch(w)
		defer close(ch)
		w.observe(ctx, ch)
	}()
	return ch
}

// Leadership is a term as leader of an election, won by Campaign. It lasts
// until Resign, or until it is lost: the lock was taken over, or no
// heartbeat succeeded for a whole lease. Its methods are safe for
// concurrent use.
type Leadership struct {
	e    *Election
	lock *Lock

	mu    sync.Mutex
	value []byte
}

// Done returns a channel that is closed when the leadership ends: resigned
// or lost. A leader must stop acting as one when it is closed.
func (ld *Leadership) Done() <-chan struct{} { return ld.lock.Done() }

// Err returns nil while the leadership lasts, and then why it ended: an
// error wrapping ErrLockAlreadyReleased.
func (ld *Leadership) Err() error { return ld.lock.Err() }

// Election returns the election this leadership belongs to.
func (ld *Leadership) Election() *Election { return ld.e }

// Lock returns the lock behind the leadership. Its record version number is
// a fencing token, and Lock.Guard fences a transaction with the leadership.
// Release it with Resign, not directly.
func (ld *Leadership) Lock() *Lock { return ld.lock }

// Value returns the value last published: given to Campaign, or stored by a
// successful Proclaim. The caller must not modify it.
func (ld *Leadership) Value() []byte {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.value
}

// Proclaim replaces the leader's published value without giving up the
// leadership: one UPDATE of the lock's data, made only if the row still
// carries this lock's record version number. It does not count as a
// heartbeat. It returns an error wrapping ErrLockAlreadyReleased, and ends
// the leadership, when the lock was lost; any other error (the database is
// unreachable) leaves the leadership as it was, and the stored value either
// old or new.
func (ld *Leadership) Proclaim(ctx context.Context, value []byte) error {
	l := ld.lock
	c := l.client
	if err := l.op.lock(ctx); err != nil { // no heartbeat or release may change the RVN meanwhile
		return contextError(ctx, fmt.Errorf("pglock: cannot proclaim in election %q: %w", l.name, err))
	}
	defer l.op.unlock()
	ctx, cancel := l.withinLease(ctx)
	defer cancel()
	affected, err := c.proclaim(ctx, l, value)
	if err == nil && affected == 0 {
		// The row may carry the RVN of a heartbeat of unknown outcome.
		var held bool
		if held, err = c.moved(ctx, l); held {
			affected, err = c.proclaim(ctx, l, value)
		}
	}
	switch {
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot proclaim in election %q: %w", l.name, err))
	case affected == 0:
		l.end(errStolen)
		return &OtherError{errStolen}
	}
	ld.mu.Lock()
	ld.value = bytes.Clone(value)
	ld.mu.Unlock()
	return nil
}

// proclaim stores value in l's row if it still carries l's RVN and owner.
func (c *Client) proclaim(ctx context.Context, l *Lock, value []byte) (int64, error) {
	held, ended := l.state()
	if ended {
		return 0, l.Err()
	}
	var affected int64
	err := c.keep.runWarm(ctx, func(ctx context.Context, q querier) error {
		return retry(ctx, c.log, func() error {
			var err error
			affected, err = execAffected(ctx, q, c.sql.proclaim, l.name, held.rvn, value, l.owner, c.sql.channel)
			return err
		})
	})
	if err != nil {
		return 0, err // a statement left behind may still write affected
	}
	return affected, nil
}

// Resign gives the leadership up at once: the lock is released, and a
// waiting candidate takes over without waiting for a lease. It returns an
// error wrapping ErrLockAlreadyReleased when the leadership had already
// ended. As with ReleaseContext, the leadership ends before anything is
// sent, whatever the outcome: when the database cannot be reached the error
// is returned, and Resign may be called again to free the row, which
// otherwise expires a lease after the last heartbeat.
func (ld *Leadership) Resign(ctx context.Context) error {
	return ld.lock.client.ReleaseContext(ctx, ld.lock)
}
