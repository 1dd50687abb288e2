package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
)

// listenFunc is one run of a LISTEN connection: it listens on channel, calls
// ready once notifications flow, and turns them into wake-ups until the
// connection breaks or ctx ends.
type listenFunc func(ctx context.Context, channel string, ready func()) error

// errNoNotifications means the driver's connections cannot wait for
// notifications: waiters poll.
var errNoNotifications = errors.New("pglock: the driver's connections cannot receive notifications")

// listener picks how this client listens for releases: with a lib/pq
// ListenerConn dialed with the connection string the *sql.DB was opened with
// (sql.Open with any driver whose DSN lib/pq reads); else with a connection
// of the pool's own driver opened outside the pool, when that driver is pgx
// v5's stdlib (sql.Open("pgx", dsn)); else with a connection held from the
// pool when that is safe (see poolListenSafe), for pgx's stdlib.OpenDB. It
// returns nil when none is possible: then waiters poll.
func (r *waitRoom) listener() listenFunc {
	if dsn, ok := dataSourceName(r.c.db); ok {
		return func(ctx context.Context, channel string, ready func()) error {
			return r.serve(ctx, dsn, channel, ready)
		}
	}
	if connect := driverConnect(r.c.db); connect != nil {
		return func(ctx context.Context, channel string, ready func()) error {
			conn, err := connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			return r.listenOn(ctx, conn, channel, ready)
		}
	}
	if poolListenSafe(r.c.db) {
		return r.servePoolConn
	}
	return nil
}

// poolListenSafe reports whether a LISTEN may hold one of db's own pool
// connections for as long as anyone waits: only when the pool has no limit
// (SetMaxOpenConns was not called), so the listener can never take the last
// connection the waiters need, and the connector does not draw from a
// bounded pool of its own (pgx's stdlib.OpenDBFromPool).
func poolListenSafe(db *sql.DB) bool {
	if db.Stats().MaxOpenConnections != 0 {
		return false
	}
	v := reflect.ValueOf(db).Elem().FieldByName("connector")
	if !v.IsValid() || v.Kind() != reflect.Interface || v.IsNil() {
		return false
	}
	v = v.Elem()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return false
	}
	if f := v.FieldByName("pool"); f.IsValid() && (f.Kind() != reflect.Pointer || !f.IsNil()) {
		return false
	}
	return true
}

// servePoolConn listens on a connection taken from db's pool, for a *sql.DB
// made with sql.OpenDB from a connector (pgx's stdlib.OpenDB), where no
// connection string can be recovered. The connection is discarded
// afterwards, never handed back to the pool with LISTEN active.
func (r *waitRoom) servePoolConn(ctx context.Context, channel string, ready func()) error {
	conn, err := r.c.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		var err error
		if c, ok := dc.(driver.Conn); ok {
			err = r.listenOn(ctx, c, channel, ready)
		} else {
			err = errNoNotifications
		}
		// driver.ErrBadConn makes database/sql close the connection.
		return errors.Join(driver.ErrBadConn, err)
	})
}

// driverConnect returns a function that opens a new connection with db's
// driver and connection string, outside db's pool, so a long-lived LISTEN
// never takes a connection the pool's users count on. It works for drivers
// whose connector keeps the connection string in a string field "name", as
// pgx v5's stdlib does for sql.Open("pgx", dsn); otherwise it returns nil.
// The connector is read by reflection, never changed.
func driverConnect(db *sql.DB) func(context.Context) (driver.Conn, error) {
	dc, ok := db.Driver().(driver.DriverContext)
	if !ok {
		return nil
	}
	v := reflect.ValueOf(db).Elem().FieldByName("connector")
	if !v.IsValid() || v.Kind() != reflect.Interface || v.IsNil() {
		return nil
	}
	v = v.Elem()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	f := v.FieldByName("name")
	if !f.IsValid() || f.Kind() != reflect.String {
		return nil
	}
	name := f.String()
	return func(ctx context.Context) (driver.Conn, error) {
		connector, err := dc.OpenConnector(name)
		if err != nil {
			return nil, err
		}
		return connector.Connect(ctx)
	}
}

// listenOn listens on conn until it breaks or ctx ends. It returns
// errNoNotifications when the connection cannot wait for notifications.
func (r *waitRoom) listenOn(ctx context.Context, conn driver.Conn, channel string, ready func()) error {
	wait, ok := notificationWaiter(conn)
	if !ok {
		return errNoNotifications
	}
	execer, ok := conn.(driver.ExecerContext)
	if !ok {
		return errNoNotifications
	}
	if _, err := execer.ExecContext(ctx, "LISTEN "+quoteIdent(channel), nil); err != nil {
		return err
	}
	r.setListening(true)
	defer r.setListening(false)
	ready()
	r.announce("", true) // releases between a waiter's last try and LISTEN
	for {
		gotChannel, payload, err := wait(ctx)
		if err != nil {
			return err
		}
		if gotChannel == channel {
			r.c.stats.notifications.Add(1)
			r.announce(payload, false)
		}
	}
}

// notificationWaiter returns a function that blocks until conn receives a
// notification, for a driver connection that exposes pgx's API:
// conn.Conn().WaitForNotification(ctx) returning a pointer to a struct with
// Channel and Payload strings. pgx is called by reflection so this package
// does not import it.
func notificationWaiter(conn driver.Conn) (func(context.Context) (channel, payload string, err error), bool) {
	get := reflect.ValueOf(conn).MethodByName("Conn")
	if !get.IsValid() || get.Type().NumIn() != 0 || get.Type().NumOut() != 1 {
		return nil, false
	}
	inner := get.Call(nil)[0]
	if inner.Kind() == reflect.Pointer && inner.IsNil() {
		return nil, false
	}
	wait := inner.MethodByName("WaitForNotification")
	ctxType := reflect.TypeFor[context.Context]()
	errType := reflect.TypeFor[error]()
	if !wait.IsValid() {
		return nil, false
	}
	wt := wait.Type()
	if wt.NumIn() != 1 || wt.In(0) != ctxType || wt.NumOut() != 2 || wt.Out(1) != errType {
		return nil, false
	}
	nt := wt.Out(0)
	if nt.Kind() != reflect.Pointer || nt.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	for _, field := range []string{"Channel", "Payload"} {
		if f, ok := nt.Elem().FieldByName(field); !ok || f.Type.Kind() != reflect.String {
			return nil, false
		}
	}
	return func(ctx context.Context) (string, string, error) {
		out := wait.Call([]reflect.Value{reflect.ValueOf(&ctx).Elem()})
		if err, _ := out[1].Interface().(error); err != nil {
			return "", "", err
		}
		if out[0].IsNil() {
			return "", "", fmt.Errorf("pglock: nil notification")
		}
		n := out[0].Elem()
		return n.FieldByName("Channel").String(), n.FieldByName("Payload").String(), nil
	}, true
}
