package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"
)

// This file holds every use of reflection in the package. Each reads what a
// dependency keeps private, or calls pgx without importing it, and each is
// covered by a test that fails on the Go or pgx version where it stops
// working (the driver scenarios of drivers_test.go check that a client
// listens under each driver; TestNewTrustsOnlyKnownDrivers checks the
// driver check), so that an upgrade cannot silently switch clients to
// polling. WithSessionDSN avoids reading the connection string altogether.

// isTrustedDriver reports whether db's driver is lib/pq or pgx v5's stdlib.
// pgx is recognised by its type, so this package does not import it.
func isTrustedDriver(db *sql.DB) bool {
	t := reflect.TypeOf(db.Driver())
	if t == nil {
		return false
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() + "." + t.Name() {
	case "github.com/lib/pq.Driver", "github.com/jackc/pgx/v5/stdlib.Driver":
		return true
	}
	return false
}

// isPGXDriver reports whether d is pgx v5's stdlib driver.
func isPGXDriver(d driver.Driver) bool {
	t := reflect.TypeOf(d)
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && t.PkgPath() == "github.com/jackc/pgx/v5/stdlib" && t.Name() == "Driver"
}

// connectorStruct returns the struct behind db's unexported connector
// field, or an invalid Value.
func connectorStruct(db *sql.DB) reflect.Value {
	v := reflect.ValueOf(db).Elem().FieldByName("connector")
	if !v.IsValid() || v.Kind() != reflect.Interface || v.IsNil() {
		return reflect.Value{}
	}
	v = v.Elem()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v
}

// connString recovers the connection string db was opened with by sql.Open:
// database/sql keeps it in its connector (field dsn) for drivers such as
// lib/pq, and pgx v5's stdlib keeps it in its own connector (field name).
// It is read, never changed. A *sql.DB made by sql.OpenDB has none.
func connString(db *sql.DB) (string, bool) {
	v := connectorStruct(db)
	if !v.IsValid() {
		return "", false
	}
	field := ""
	switch v.Type().PkgPath() {
	case "database/sql":
		field = "dsn"
	case "github.com/jackc/pgx/v5/stdlib":
		field = "name"
	default:
		return "", false
	}
	f := v.FieldByName(field)
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// poolListenSafe reports whether a LISTEN may hold one of db's own pool
// connections for as long as anyone waits: only when the pool has no limit
// (SetMaxOpenConns was not called), so the listener can never take the last
// connection the waiters need, and the connector does not draw from a
// bounded pool of its own (pgx's stdlib.OpenDBFromPool keeps one in its
// field pool).
func poolListenSafe(db *sql.DB) bool {
	if db.Stats().MaxOpenConnections != 0 {
		return false
	}
	v := connectorStruct(db)
	if !v.IsValid() {
		return false
	}
	f := v.FieldByName("pool")
	return !f.IsValid() || (f.Kind() == reflect.Pointer && f.IsNil())
}

// notificationWaiter returns a function that blocks until conn receives a
// notification, for a driver connection that exposes pgx's API:
// conn.Conn().WaitForNotification(ctx) returning a pointer to a struct with
// Channel and Payload strings. pgx is called by reflection so this package
// does not import it.
func notificationWaiter(conn any) (func(context.Context) (channel, payload string, err error), bool) {
	get := reflect.ValueOf(conn).MethodByName("Conn")
	if !get.IsValid() || get.Type().NumIn() != 0 || get.Type().NumOut() != 1 {
		return nil, false
	}
	inner := get.Call(nil)[0]
	if inner.Kind() == reflect.Pointer && inner.IsNil() {
		return nil, false
	}
	wait := inner.MethodByName("WaitForNotification")
	if !wait.IsValid() || !isNotificationWait(wait.Type()) {
		return nil, false
	}
	return func(ctx context.Context) (string, string, error) {
		out := wait.Call([]reflect.Value{reflect.ValueOf(&ctx).Elem()})
		if err, _ := out[1].Interface().(error); err != nil {
			return "", "", err
		}
		if out[0].IsNil() {
			return "", "", errors.New("pglock: nil notification")
		}
		n := out[0].Elem()
		return n.FieldByName("Channel").String(), n.FieldByName("Payload").String(), nil
	}, true
}

// isNotificationWait reports whether t is func(context.Context)
// (*struct{Channel, Payload string; ...}, error).
func isNotificationWait(t reflect.Type) bool {
	if t.NumIn() != 1 || t.In(0) != reflect.TypeFor[context.Context]() ||
		t.NumOut() != 2 || t.Out(1) != reflect.TypeFor[error]() {
		return false
	}
	nt := t.Out(0)
	if nt.Kind() != reflect.Pointer || nt.Elem().Kind() != reflect.Struct {
		return false
	}
	for _, field := range []string{"Channel", "Payload"} {
		if f, ok := nt.Elem().FieldByName(field); !ok || f.Type.Kind() != reflect.String {
			return false
		}
	}
	return true
}
