package pglock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// A listener keeps one LISTEN session on the table's release channel while
// a client's waiters wait, reconnecting with backoff, and turns release
// notifications into wake-ups. The session comes from one of the adapters
// (listen_pq.go, listen_pgx.go), picked by listenSource.

// notifier is one LISTEN session, already listening on the release channel.
type notifier interface {
	// wait blocks until a notification on the channel arrives and returns
	// its payload, or until the session breaks or ctx ends.
	wait(ctx context.Context) (payload string, err error)
	// close ends the session; it does not block on the network.
	close()
}

// dialFunc opens a LISTEN session on channel, returning once notifications
// flow, or when ctx ends.
type dialFunc func(ctx context.Context, channel string) (notifier, error)

// errNoNotifications means the driver's connections cannot wait for
// notifications: waiters poll.
var errNoNotifications = errors.New("pglock: the driver's connections cannot receive notifications")

// listener is one run of the listening goroutine.
type listener struct {
	stop  context.CancelFunc
	ready chan struct{} // closed once the first session is up, or failed
}

// startListener starts a listener for r's waiters and observers, and holds
// the client's own connections meanwhile: their polls go out there, in one
// round trip each (see keeper.onOwn). r.mu must be held.
func (r *waitRoom) startListener() *listener {
	r.c.keep.hold()
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{stop: func() {
		cancel()
		r.c.keep.letGo()
	}, ready: make(chan struct{})}
	r.listeners.Add(1)
	go func() {
		defer r.listeners.Done()
		r.listen(ctx, l)
	}()
	return l
}

// listen keeps a session open until ctx ends. Without a way to listen
// (see listenSource) it gives up at once, and waiters poll.
func (r *waitRoom) listen(ctx context.Context, l *listener) {
	readyOnce := sync.OnceFunc(func() { close(l.ready) })
	defer readyOnce()
	if r.deaf.Load() {
		return // a probe showed notifications cannot arrive: waiters poll
	}
	dial := r.c.listenSource()
	if dial == nil {
		r.pollNote.Do(func() {
			r.c.log.Info("no way to LISTEN on this *sql.DB: waiters poll every 250ms; give WithSessionDSN a connection string for release notifications")
		})
		return
	}
	if r.wrapDial != nil {
		dial = r.wrapDial(dial)
	}
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := r.session(ctx, dial, readyOnce)
		readyOnce()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoNotifications) {
			r.pollNote.Do(func() {
				r.c.log.Info("the driver's connections cannot LISTEN: waiters poll every 250ms; give WithSessionDSN a connection string for release notifications")
			})
			return
		}
		if errors.Is(err, errNotDelivered) && !r.heard.Load() {
			if !r.deaf.Swap(true) {
				r.c.log.Warn(deafLog, "probe_bound", probeBound)
			}
			return
		}
		// A probe missed by a client whose sessions received theirs before
		// says the server or the client was slow (a failover under load),
		// not that notifications cannot arrive: the session is replaced like
		// a broken one.
		r.c.log.Debug("release listener lost, reconnecting", "error", err, "backoff", backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// session runs one LISTEN session until it breaks or ctx ends. It counts
// as listening once its probe (see probe) arrived.
func (r *waitRoom) session(ctx context.Context, dial dialFunc, ready func()) error {
	n, err := dial(ctx, r.c.sql.channel)
	if err != nil {
		return err
	}
	defer n.close()
	ready()
	r.announce("", true) // releases between a waiter's last try and LISTEN
	if err := r.probe(ctx, n); err != nil {
		return err
	}
	r.heard.Store(true)
	// Counted before it shows as listening: a Stats that shows it
	// listening counts it among ListenerConnects.
	r.c.stats.add(counterListens, 1)
	r.sessions.Add(1)
	defer r.sessions.Add(-1)
	for {
		payload, err := n.wait(ctx)
		if err != nil {
			return err
		}
		r.c.stats.add(counterNotifications, 1)
		r.announce(payload, false)
	}
}

// listenSource picks how this client listens for releases: with the
// connection string of its sessions (WithSessionDSN, or the one the *sql.DB
// was opened with), through pgx when the *sql.DB's driver is pgx's and
// through lib/pq's listener otherwise; else, for pgx, on a connection of
// the *sql.DB's own pool when that is safe (see poolListenSafe). It returns
// nil when there is no way: then waiters poll.
func (c *Client) listenSource() dialFunc {
	pgx := isPGXDriver(c.db.Driver())
	if dsn := c.sessionConnString(); dsn != "" {
		if pgx {
			return dialPGX(sessionConnector(c.db.Driver(), dsn), c.sql.listen)
		}
		return dialPQ(dsn)
	}
	if pgx && poolListenSafe(c.db) {
		return dialPool(c.db, c.sql.listen)
	}
	return nil
}
