package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
)

// dialPGX opens LISTEN sessions on connections of pgx's database/sql driver
// made by connect, outside any pool: a long-lived LISTEN never takes a
// connection the pool's users count on. pgx honours contexts on its own
// sockets, so a session never outlives the context it waits with.
func dialPGX(connect driver.Connector, listen string) dialFunc {
	return func(ctx context.Context, _ string) (notifier, error) {
		conn, err := connect.Connect(ctx)
		if err != nil {
			return nil, err
		}
		n, err := newPGXNotifier(ctx, conn, listen)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		return n, nil
	}
}

// pgxNotifier is a LISTEN session on a pgx driver connection.
type pgxNotifier struct {
	conn driver.Conn
	next func(context.Context) (channel, payload string, err error)
}

func newPGXNotifier(ctx context.Context, conn driver.Conn, listen string) (*pgxNotifier, error) {
	next, ok := notificationWaiter(conn)
	execer, isExecer := conn.(driver.ExecerContext)
	if !ok || !isExecer {
		return nil, errNoNotifications
	}
	if _, err := execer.ExecContext(ctx, listen, nil); err != nil {
		return nil, err
	}
	return &pgxNotifier{conn: conn, next: next}, nil
}

func (n *pgxNotifier) wait(ctx context.Context) (string, error) {
	_, payload, err := n.next(ctx)
	return payload, err
}

func (n *pgxNotifier) close() { _ = n.conn.Close() }

// dialPool opens LISTEN sessions on a connection held from db's own pool,
// for a *sql.DB made by pgx's stdlib.OpenDB, where no connection string can
// be had (see poolListenSafe for when that is safe). The connection is
// discarded afterwards, never handed back to the pool with LISTEN active.
func dialPool(db *sql.DB, listen string) dialFunc {
	return func(ctx context.Context, _ string) (notifier, error) {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		n := &poolNotifier{conn: conn}
		err = conn.Raw(func(dc any) error {
			if _, ok := notificationWaiter(dc); !ok {
				return errNoNotifications
			}
			return nil
		})
		if err == nil {
			_, err = conn.ExecContext(ctx, listen)
		}
		if err != nil {
			n.close()
			return nil, err
		}
		return n, nil
	}
}

// poolNotifier is a LISTEN session on a connection of the caller's pool.
type poolNotifier struct{ conn *sql.Conn }

func (n *poolNotifier) wait(ctx context.Context) (string, error) {
	var payload string
	err := n.conn.Raw(func(dc any) error {
		next, ok := notificationWaiter(dc)
		if !ok {
			return errNoNotifications
		}
		var err error
		_, payload, err = next(ctx)
		return err
	})
	return payload, err
}

func (n *poolNotifier) close() {
	// driver.ErrBadConn makes database/sql close the connection.
	_ = n.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = n.conn.Close()
}
