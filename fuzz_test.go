package pglock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// Seeds shared by the fuzz targets: empty, boundary lengths, NUL, invalid
// UTF-8, quotes, SQL, unicode.
var fuzzSeeds = []string{
	"",
	"a",
	strings.Repeat("x", 63),
	strings.Repeat("x", 64),
	strings.Repeat("x", 255),
	strings.Repeat("x", 256),
	strings.Repeat("é", 127), // 254 bytes
	strings.Repeat("é", 128), // 256 bytes, 128 characters
	"nul\x00byte",
	"\x00",
	"bad\xffutf8",
	"\xc3\x28",
	`'`,
	`"`,
	`""`,
	`"quoted"`,
	`a"b`,
	`it's`,
	`IF EXISTS x; DROP TABLE y`,
	`x; DROP TABLE locks; --`,
	`$1`,
	`\`,
	`%s%d`,
	"日本語のロック",
	"🔒 emoji",
	"tab\tnew\nline",
	" leading and trailing ",
	"schema.table",
	`"s"."t"`,
	"a.b.c",
	".",
	"..",
	"pg_catalog.pg_class",
	"pg_class",
	"pg_temp.t",
	`public."pg_class"`,
	"information_schema.tables",
	strings.Repeat("x", 59),
	strings.Repeat("x", 60),
	strings.Repeat("x", 62),
	strings.Repeat("é", 31) + "x", // 63 bytes
	"Locks",
}

// validLockName mirrors the documented rule for lock names.
func validLockName(s string) bool {
	return s != "" && len(s) <= 255 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// fuzzClient makes a client without background heartbeat on a fresh
// table for a fuzz target.
func fuzzClient(f *testing.F) *pglock.Client {
	f.Helper()
	return newClient(f, openDB(f), pglock.WithHeartbeatFrequency(0), pglock.WithLeaseDuration(time.Minute))
}

// FuzzLockName: any lock name is either refused with ErrInvalidName, exactly
// when it breaks the documented rule, or acquired, read back and released.
func FuzzLockName(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	c := fuzzClient(f)
	f.Fuzz(func(t *testing.T, name string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := c.AcquireContext(ctx, name, pglock.FailIfLocked(), pglock.WithData([]byte("d")))
		if !validLockName(name) {
			require.ErrorIs(t, err, pglock.ErrInvalidName, "name %q", name)
			_, err = c.GetContext(ctx, name)
			require.ErrorIs(t, err, pglock.ErrInvalidName, "Get %q", name)
			return
		}
		require.NoError(t, err, "name %q", name)
		require.Equal(t, name, l.Name())
		got, err := c.GetContext(ctx, name)
		require.NoError(t, err)
		require.Equal(t, name, got.Name())
		require.Equal(t, []byte("d"), got.Data())
		_, err = c.AcquireContext(ctx, name, pglock.FailIfLocked())
		require.ErrorIs(t, err, pglock.ErrNotAcquired)
		require.NoError(t, c.ReleaseContext(ctx, l))
		_, err = c.GetContext(ctx, name)
		require.ErrorIs(t, err, pglock.ErrLockNotFound)
	})
}

// FuzzLockData: any data is stored and read back unchanged.
func FuzzLockData(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(nil))
	f.Add(bytes.Repeat([]byte{0xff, 0x00, '\\', 'x'}, 1<<18)) // 1 MiB
	c := fuzzClient(f)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		name := "data-" + hex.EncodeToString([]byte{byte(n.Add(1))}) + "-" + tableName(t)
		l, err := c.AcquireContext(ctx, name, pglock.WithData(data), pglock.KeepOnRelease())
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, l.Data()), "acquired data differs")
		got, err := c.GetDataContext(ctx, name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "stored data differs: %d bytes in, %d out", len(data), len(got))
		require.NoError(t, c.ReleaseContext(ctx, l))
		got, err = c.GetDataContext(ctx, name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "kept data differs")
		// Replace it, then drop the row.
		l, err = c.AcquireContext(ctx, name, pglock.WithData(append([]byte("new"), data...)), pglock.ReplaceData())
		require.NoError(t, err)
		got, err = c.GetDataContext(ctx, name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(append([]byte("new"), data...), got), "replaced data differs")
		require.NoError(t, c.ReleaseContext(ctx, l))
	})
}

// FuzzTableName: any table name is either refused by New with
// ErrInvalidTableName, or works end to end: CreateTable, Acquire, Release,
// DropTable. It runs in a database of its own, so that hostile names cannot
// touch the tables of other tests.
func FuzzTableName(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	dbName := "fuzz_" + hex.EncodeToString(buf)
	dsn, err := srv.CreateDatabase(dbName)
	require.NoError(f, err)
	db, err := sql.Open("postgres", dsn)
	require.NoError(f, err)
	f.Cleanup(func() {
		_ = db.Close()
		_ = srv.Exec(`DROP DATABASE ` + dbName + ` WITH (FORCE)`)
	})
	f.Fuzz(func(t *testing.T, table string) {
		c, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithHeartbeatFrequency(0))
		if err != nil {
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "table %q", table)
			return
		}
		if err := c.CreateTable(); err != nil {
			if errors.Is(err, pglock.ErrInvalidTableName) {
				// The name resolves to a relation of the system
				// (pg_class, information_schema.tables): refused by
				// the first call that uses it, as documented.
				return
			}
			// The environment may refuse what a valid name asks for: a
			// schema that does not exist, or one we may not create in
			// (pg_catalog). Those are reported as the server's error.
			var pqErr *pq.Error
			require.ErrorAs(t, err, &pqErr, "table %q: %v", table, err)
			if pqErr.Code == "3F000" || pqErr.Code == "42501" {
				return
			}
			t.Fatalf("table %q: CreateTable: %v", table, err)
		}
		defer func() { require.NoError(t, c.DropTable(), "table %q", table) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := c.AcquireContext(ctx, "n", pglock.WithData([]byte("d")))
		require.NoError(t, err, "table %q", table)
		all, err := c.GetAllLocksContext(ctx)
		require.NoError(t, err, "table %q", table)
		require.Len(t, all, 1)
		require.NoError(t, c.SendHeartbeat(ctx, l), "table %q", table)
		require.NoError(t, c.ReleaseContext(ctx, l), "table %q", table)
		require.NoError(t, c.TryCreateTable(), "table %q", table)
	})
}
