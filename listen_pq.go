package pglock

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/lib/pq"
)

// dialPQ opens LISTEN sessions with lib/pq's listener on dsn. Its
// connections are dialed by a sessionDialer, so that closing a session
// never waits on the network, even when the server accepted the connection
// and then went silent.
func dialPQ(dsn string) dialFunc {
	return func(ctx context.Context, channel string) (notifier, error) {
		sctx, cancel := context.WithCancel(context.Background())
		n := &pqNotifier{cancel: cancel, lost: make(chan error, 1)}
		// A lost connection ends this session (see event), and the
		// listening loop dials the next one with its own backoff. lib/pq's
		// listener sleeps its reconnect interval, uninterruptibly, before it
		// notices it was closed: keep it short.
		n.l = pq.NewDialListener(sessionDialer{sctx}, dsn, pqReconnect, pqReconnect, n.event)
		listened := make(chan error, 1)
		go func() { listened <- n.l.Listen(channel) }()
		var err error
		returned := false
		select {
		case err = <-listened:
			returned = true
		case err = <-n.lost:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			n.close()
			if !returned {
				<-listened //nolint:errcheck // Listen returns once the listener is closed; err says why
			}
			return nil, err
		}
		return n, nil
	}
}

// pqReconnect is the reconnect interval of lib/pq's listener.
const pqReconnect = 10 * time.Millisecond

// pqNotifier is a LISTEN session on a lib/pq listener.
type pqNotifier struct {
	l      *pq.Listener
	cancel context.CancelFunc // closes the session's sockets
	lost   chan error         // the connection broke, or could not be made
}

// errListenerLost stands for a listener connection lost without an error.
var errListenerLost = errors.New("pglock: listener connection lost")

// event receives lib/pq's listener events.
func (n *pqNotifier) event(ev pq.ListenerEventType, err error) {
	if ev != pq.ListenerEventDisconnected && ev != pq.ListenerEventConnectionAttemptFailed {
		return
	}
	if err == nil {
		err = errListenerLost
	}
	select {
	case n.lost <- err:
	default:
	}
}

func (n *pqNotifier) wait(ctx context.Context) (string, error) {
	for {
		select {
		case note, ok := <-n.l.Notify:
			switch {
			case !ok:
				return "", net.ErrClosed
			case note != nil: // nil announces a reconnection, which never comes first
				return note.Extra, nil
			}
		case err := <-n.lost:
			return "", err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// close ends the session and waits for lib/pq's goroutine to exit: it
// closes Notify then, within pqReconnect once the sockets are closed.
func (n *pqNotifier) close() {
	n.cancel()
	_ = n.l.Close()
	for range n.l.Notify {
	}
}

// sessionDialer dials the connections of one LISTEN session: a dial
// returns when the session ends, and the connections it made are closed
// then, so that lib/pq's reads on them return.
type sessionDialer struct{ session context.Context }

func (d sessionDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d sessionDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d sessionDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.session, cancel)
	defer stop()
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &sessionConn{Conn: conn, stop: context.AfterFunc(d.session, func() { _ = conn.Close() })}, nil
}

// sessionConn is a connection closed when its session ends.
type sessionConn struct {
	net.Conn
	stop func() bool
}

func (c *sessionConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
