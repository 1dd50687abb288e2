package pglock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"
)

// A LISTEN through a pooler in transaction mode succeeds, but the pooler
// hands the server connection that listens to other clients between
// transactions, so no notification ever reaches the listener. A session
// counted as listening would make waiters poll slowly for nothing. So a new
// session first notifies its own channel with a probe payload; only once
// the probe arrives does it count as listening (Stats.Listening). When it
// does not arrive within probeBound, and no session of the client ever
// received its probe, the client logs once why, stops listening for good,
// and its waiters poll at pollWithoutListener. A client whose sessions did
// receive their probes has a path that delivers notifications: a probe it
// misses later was late (the server or the client was too busy, as during
// a failover under load), and the session is replaced like a broken one,
// its waiters polling meanwhile. The probe costs one NOTIFY per session,
// and runs on the listener's goroutine: no caller waits for it.

// probeBound is how long a new session waits for its probe. A notification
// on loopback takes about a millisecond; the bound leaves room for a loaded
// server, and a waiter polls at pollWithoutListener meanwhile.
const probeBound = 2 * time.Second

// errNotDelivered means the probe notification did not reach the session.
var errNotDelivered = errors.New("pglock: a notification on the release channel did not reach the listener")

// deafLog is logged once when the probe did not arrive.
const deafLog = "release notifications do not reach this client's LISTEN session (a pooler in transaction mode?): " +
	"its waiters poll instead; give WithSessionDSN a direct or session-mode connection string for the listener"

// probe notifies the session's channel with a payload of its own and waits
// for it, announcing the releases that arrive meanwhile. It returns
// errNotDelivered when the probe does not arrive within probeBound.
func (r *waitRoom) probe(ctx context.Context, n notifier) error {
	payload := probePayload()
	err := r.c.statement(ctx, func(ctx context.Context) error {
		return r.c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			_, err := q.ExecContext(ctx, r.c.sql.notify, r.c.sql.channel, payload)
			return err
		})
	}, nil)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, probeBound)
	defer cancel()
	for {
		got, err := n.wait(pctx)
		switch {
		case err != nil && ctx.Err() == nil && pctx.Err() != nil:
			return errNotDelivered
		case err != nil:
			return err
		case got == payload:
			return nil
		}
		r.c.stats.add(counterNotifications, 1)
		r.announce(got, false)
	}
}

// probePayload returns a payload no other session sends. Other clients on
// the channel take it for a lock name, which wakes nobody.
func probePayload() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return probePrefix + hex.EncodeToString(b)
}

// probePrefix starts every probe payload.
const probePrefix = "pglock-probe-"
