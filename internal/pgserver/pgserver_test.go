package pgserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock/internal/needtool"
)

func TestServerLifecycle(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("PostgreSQL %q at %s (bin %s)", s.Version(), s.DSN(), s.BinDir())

	if err := s.Exec("SELECT 1"); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	var pgErr *pq.Error
	if err := s.Exec("SELECT no_such_column"); !errors.As(err, &pgErr) || pgErr.Code != "42703" {
		t.Fatalf("bad query: got %v, want a *pq.Error with SQLSTATE 42703", err)
	}
	if err := s.Exec("SELECT no_such_column"); !strings.HasPrefix(err.Error(), "pgserver: ") {
		t.Fatalf("bad query: error %q lacks the package prefix", err)
	}
	if s.External() {
		if err := s.Stop(); !errors.Is(err, ErrExternal) {
			t.Fatalf("Stop on external server: got %v, want ErrExternal", err)
		}
		if err := s.Restart(); !errors.Is(err, ErrExternal) {
			t.Fatalf("Restart on external server: got %v, want ErrExternal", err)
		}
		if s.PID() != 0 || s.Version() != "" {
			t.Fatalf("external server: PID %d, Version %q", s.PID(), s.Version())
		}
		return
	}

	if !strings.HasPrefix(s.DSN(), "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(s.DSN(), "/postgres?sslmode=disable") {
		t.Fatalf("unexpected DSN %q", s.DSN())
	}
	if s.Version() == "" || s.PID() <= 0 {
		t.Fatalf("Version %q, PID %d", s.Version(), s.PID())
	}
	dialOK(t, s.Addr())
	for name, want := range map[string]string{"synchronous_commit": "off", "fsync": "off", "max_connections": "400"} {
		if got := show(t, s.DSN(), name); got != want {
			t.Errorf("default %s = %q, want %q", name, got, want)
		}
	}

	dsn, err := s.CreateDatabase("pgtest db")
	if err != nil {
		t.Fatal(err)
	}
	var dbName string
	if err := queryRowDSN(dsn, "SELECT current_database()", &dbName); err != nil || dbName != "pgtest db" {
		t.Fatalf("CreateDatabase DSN %q: connected to %q, %v", dsn, dbName, err)
	}
	if err := execDSN(dsn, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)", queryTimeout); err != nil {
		t.Fatal(err)
	}

	port, dir := s.Port(), s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Fatalf("PID after Stop: %d", s.PID())
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("server still accepts TCP connections after Stop")
	}
	if _, err := os.Stat(s.DataDir()); err != nil {
		t.Fatalf("data dir after Stop: %v", err)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Fatalf("port changed on Restart: %d -> %d", port, s.Port())
	}
	dialOK(t, s.Addr())
	if err := execDSN(dsn, "DO $$ BEGIN IF (SELECT id FROM kept) <> 42 THEN RAISE 'lost'; END IF; END $$", queryTimeout); err != nil {
		t.Fatalf("data lost across Restart: %v", err)
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s still there after Close: %v", dir, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("server still accepts TCP connections after Close")
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart after Close succeeded")
	}
}

func dialOK(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("TCP connect to %s: %v", addr, err)
	}
	c.Close()
}

type fakeM struct {
	run func() int
}

func (m fakeM) Run() int { return m.run() }

func TestMainHelpers(t *testing.T) {
	var dsn string
	var srv *Server
	code := MainServer(fakeM{run: func() int {
		if err := srv.Exec("SELECT 1"); err != nil {
			t.Error(err)
		}
		return 3
	}}, &srv)
	if code != 3 {
		t.Fatalf("MainServer returned %d, want 3", code)
	}
	if !srv.External() {
		if _, err := os.Stat(srv.Dir()); !os.IsNotExist(err) {
			t.Fatalf("temp dir still there after MainServer: %v", err)
		}
	}

	code = Main(fakeM{run: func() int {
		if !strings.HasPrefix(dsn, "postgres://") {
			t.Errorf("dsn not set: %q", dsn)
		}
		return 0
	}}, &dsn)
	if code != 0 {
		t.Fatalf("Main returned %d, want 0", code)
	}

	t.Setenv(EnvDSN, "")
	t.Setenv(EnvPGBin, t.TempDir())
	var out strings.Builder
	stderr = &out
	defer func() { stderr = os.Stderr }()
	code = Main(fakeM{run: func() int {
		t.Error("Run called although Start failed")
		return 0
	}}, &dsn)
	if code != 1 {
		t.Fatalf("Main with a failing Start returned %d, want 1", code)
	}
	if !strings.Contains(out.String(), "does not contain initdb and postgres") {
		t.Fatalf("Main with a failing Start printed %q", out.String())
	}
}

func TestExternal(t *testing.T) {
	t.Setenv(EnvDSN, "postgres://u:secret@db.invalid:6543/app?sslmode=disable")
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	if !s.External() || s.DSN() != os.Getenv(EnvDSN) || s.Addr() != "db.invalid:6543" {
		t.Fatalf("external server: %v %q %q", s.External(), s.DSN(), s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); !errors.Is(err, ErrExternal) {
		t.Fatalf("Stop: %v", err)
	}
	if got, _ := replaceDatabase(s.DSN(), "other"); got != "postgres://u:secret@db.invalid:6543/other?sslmode=disable" {
		t.Fatalf("replaceDatabase: %q", got)
	}
	if got := redact(s.DSN()); strings.Contains(got, "secret") {
		t.Fatalf("redact: %q", got)
	}

	kv := "host=db.invalid port=6543 user=u password='se cret' dbname=app"
	t.Setenv(EnvDSN, kv)
	if s, err = Start(); err != nil || s.Addr() != "db.invalid:6543" {
		t.Fatalf("external key=value server: %v, Addr %q", err, s.Addr())
	}
	got, err := replaceDatabase(kv, "it's")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pq.NewConfig(got)
	if err != nil || cfg.Database != "it's" || cfg.Password != "se cret" {
		t.Fatalf("replaceDatabase(key=value): %q parses to %+v, %v", got, cfg, err)
	}
	if got := redact(kv); strings.Contains(got, "cret") {
		t.Fatalf("redact(key=value): %q", got)
	}
}

func TestFindBinDir(t *testing.T) {
	t.Setenv(EnvPGBin, t.TempDir())
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), EnvPGBin) {
		t.Fatalf("FindBinDir with an empty %s: %v", EnvPGBin, err)
	}
	for _, want := range []string{"apt-get install postgresql", EnvPGBin, EnvDSN, "PATH", "/usr/lib/postgresql/*/bin"} {
		if !strings.Contains(errNoBinaries, want) {
			t.Errorf("the no-binaries message does not mention %q", want)
		}
	}
	for _, c := range []struct {
		a, b string
		less bool
	}{{"9.6", "13", true}, {"13", "9.6", false}, {"15", "15.2", true}, {"16", "15", false}, {"10", "10", false}} {
		if got := versionLess(c.a, c.b); got != c.less {
			t.Errorf("versionLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// show returns the value of the run-time parameter name on dsn.
func show(t *testing.T, dsn, name string) string {
	t.Helper()
	var v string
	require.NoError(t, queryRowDSN(dsn, "SHOW "+name, &v))
	return v
}

// ownServer starts a cluster of its own with opts, even when
// PGLOCK_TEST_DSN names an external server.
func ownServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Local = true
	s, err := StartWith(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestStartWithOptions(t *testing.T) {
	s := ownServer(t, Options{
		SynchronousCommit: true,
		Settings:          map[string]string{"work_mem": "5MB", "search_path": `it's, "a\\b"`, "fsync": "on"},
	})
	want := map[string]string{"synchronous_commit": "on", "work_mem": "5MB", "search_path": `it's, "a\\b"`, "fsync": "on", "full_page_writes": "off"}
	for name, v := range want {
		require.Equal(t, v, show(t, s.DSN(), name), name)
	}
	require.NoError(t, s.Stop())
	require.NoError(t, s.Restart())
	require.Equal(t, "5MB", show(t, s.DSN(), "work_mem"), "settings kept across Restart")

	_, err := StartWith(Options{Settings: map[string]string{"work_mem = 1MB\nfsync": "on"}, Local: true})
	require.ErrorContains(t, err, "bad setting name")
}

func TestStartLocal(t *testing.T) {
	t.Setenv(EnvDSN, "postgres://nobody@192.0.2.1:1/none")
	s := ownServer(t, Options{})
	require.False(t, s.External(), "Local gave the external server")
	require.NotZero(t, s.PID())
	require.Equal(t, "off", show(t, s.DSN(), "synchronous_commit"))
	ext, err := StartWith(Options{})
	require.NoError(t, err)
	require.True(t, ext.External(), "without Local, %s is the server", EnvDSN)
}

// serverPort returns the port of the server a fresh connection of db
// reaches.
func serverPort(t *testing.T, db *sql.DB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var port int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT inet_server_port()").Scan(&port))
	return port
}

// holdConn returns a connection of its own to dsn and its backend pid.
func holdConn(t *testing.T, dsn string) (*sql.Conn, int) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	return conn, pid
}

// processGone reports whether pid is gone or a zombie.
func processGone(pid int) bool {
	for _, ps := range procStats() {
		if ps.pid == pid {
			return ps.state == "Z" || ps.state == "X"
		}
	}
	return true
}

func TestKill(t *testing.T) {
	s := ownServer(t, Options{SynchronousCommit: true})
	require.NoError(t, s.Exec("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)"))
	conn, backend := holdConn(t, s.DSN())
	pgid := s.PID()

	require.NoError(t, s.Kill())
	require.Zero(t, s.PID())
	require.True(t, processGone(backend), "backend %d survived Kill", backend)
	require.Empty(t, survivors(map[int]bool{pgid: true}), "processes of the postmaster's group survived Kill")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.ExecContext(ctx, "SELECT 1")
	require.Error(t, err, "a connection to a killed server still works")
	require.NoError(t, s.Kill(), "Kill of a killed server")

	require.NoError(t, s.Restart())
	var id int
	require.NoError(t, queryRowDSN(s.DSN(), "SELECT id FROM kept", &id))
	require.Equal(t, 42, id, "committed row lost across Kill and crash recovery")
	require.Contains(t, tailFile(s.LogPath(), 1000), "database system was interrupted", "no crash recovery")

	dir := s.Dir()
	require.NoError(t, s.Kill())
	require.NoError(t, s.Close())
	require.NoDirExists(t, dir)
	require.Error(t, s.Kill(), "Kill after Close")
}

// waitRow waits until the table replicated on dsn holds the row id.
func waitRow(t *testing.T, dsn string, id int) {
	t.Helper()
	require.NoError(t, pollUntil(30*time.Second, "row "+strconv.Itoa(id)+" on the standby", func() error {
		var n int
		err := queryRowDSN(dsn, "SELECT count(*) FROM replicated WHERE id = "+strconv.Itoa(id), &n)
		if err == nil && n != 1 {
			err = errors.New("not replayed")
		}
		return err
	}))
}

// replication returns sync_state by application_name in pg_stat_replication
// of the server at dsn, for standbys that are streaming.
func replication(t *testing.T, dsn string) map[string]string {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query("SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'")
	require.NoError(t, err)
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var name, state string
		require.NoError(t, rows.Scan(&name, &state))
		got[name] = state
	}
	require.NoError(t, rows.Err())
	return got
}

func TestStandbyFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("in the full suite only: run without -short")
	}
	primary := ownServer(t, Options{})
	require.Equal(t, "off", show(t, primary.DSN(), "synchronous_commit"))
	require.NoError(t, primary.Exec("CREATE TABLE replicated (id int PRIMARY KEY)"))

	syncSt, err := primary.StartStandby(true)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, syncSt.Close()) })
	asyncSt, err := primary.StartStandby(false)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, asyncSt.Close()) })

	require.NotEqual(t, syncSt.ApplicationName(), asyncSt.ApplicationName())
	require.Equal(t, map[string]string{syncSt.ApplicationName(): "sync", asyncSt.ApplicationName(): "async"},
		replication(t, primary.DSN()))
	require.Equal(t, "on", show(t, primary.DSN(), "synchronous_commit"), "sync standby left synchronous_commit off")
	require.Contains(t, show(t, asyncSt.DSN(), "primary_conninfo"), "application_name="+asyncSt.ApplicationName())
	require.Empty(t, show(t, asyncSt.DSN(), "synchronous_standby_names"), "standby inherited its primary's synchronous standby")

	require.NoError(t, primary.Exec("INSERT INTO replicated VALUES (1)"))
	waitRow(t, syncSt.DSN(), 1)
	waitRow(t, asyncSt.DSN(), 1)
	var pqErr *pq.Error
	require.ErrorAs(t, asyncSt.Exec("INSERT INTO replicated VALUES (2)"), &pqErr)
	require.EqualValues(t, "25006", pqErr.Code, "a standby accepted a write")

	// The read-write server is found whatever its place in the list.
	dsn := MultiHostDSN(syncSt, asyncSt, primary)
	require.Equal(t, primary.Port(), multiHostPort(t, "postgres", dsn))
	conn, _ := holdConn(t, dsn)

	require.NoError(t, primary.Kill())
	_, err = conn.ExecContext(context.Background(), "SELECT 1")
	require.Error(t, err, "a connection to the killed primary still works")
	require.NoError(t, asyncSt.Promote())
	require.NoError(t, asyncSt.Exec("INSERT INTO replicated VALUES (3)"), "promoted standby refuses writes")
	var inRecovery bool
	require.NoError(t, queryRowDSN(syncSt.DSN(), "SELECT pg_is_in_recovery()", &inRecovery))
	require.True(t, inRecovery, "the other standby left recovery")
	for _, driver := range []string{"postgres", "pgx"} {
		require.Equal(t, asyncSt.Port(), multiHostPort(t, driver, dsn), "%s through %s", driver, dsn)
	}
	require.ErrorContains(t, asyncSt.Promote(), "recovery is not in progress")

	for _, s := range []*Server{primary, syncSt, asyncSt} {
		dir := s.Dir()
		require.NoError(t, s.Close())
		require.NoDirExists(t, dir)
	}
}

func TestStandbyDetach(t *testing.T) {
	primary := ownServer(t, Options{SynchronousCommit: true})
	st, err := primary.StartStandby(false)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	require.NoError(t, primary.Exec("CREATE TABLE replicated (id int PRIMARY KEY); INSERT INTO replicated VALUES (1)"))
	require.NoError(t, primary.CaughtUp(st))
	var n int
	require.NoError(t, queryRowDSN(st.DSN(), "SELECT count(*) FROM replicated", &n))
	require.Equal(t, 1, n, "CaughtUp returned before the replay")

	require.NoError(t, st.Detach())
	require.NoError(t, pollUntil(10*time.Second, "end of the WAL sender", func() error {
		if got := replication(t, primary.DSN()); len(got) > 0 {
			return fmt.Errorf("the primary still streams to %v", got)
		}
		return nil
	}))
	require.NoError(t, primary.Exec("INSERT INTO replicated VALUES (2)"))
	require.NoError(t, primary.Kill())
	require.NoError(t, st.Promote())
	require.NoError(t, queryRowDSN(st.DSN(), "SELECT count(*) FROM replicated", &n))
	require.Equal(t, 1, n, "a row committed after Detach reached the standby")
}

// multiHostPort returns the port of the server that driver reaches through
// the multi-host dsn.
func multiHostPort(t *testing.T, driver, dsn string) int {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	defer db.Close()
	return serverPort(t, db)
}

// waiters counts the goroutines running (*proc).wait.
func waiters() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "pgserver.(*proc).wait(")
}

// backendPid returns the pid of the server backend conn's statement runs on.
func backendPid(t *testing.T, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) int {
	t.Helper()
	var pid int
	require.NoError(t, q.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid))
	return pid
}

func TestPgBouncer(t *testing.T) {
	s := ownServer(t, Options{})
	_, err := StartPgBouncer(s, "statement")
	require.ErrorContains(t, err, "want session or transaction")

	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			before := waiters()
			b, err := StartPgBouncer(s, mode)
			if errors.Is(err, ErrNoPgBouncer) {
				needtool.Missing(t, InstallPgBouncer, err)
			}
			require.NoError(t, err)
			defer b.Close()
			require.Equal(t, before+1, waiters())
			require.Equal(t, mode, b.Mode())
			require.Equal(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port())), b.Addr())

			db, err := sql.Open("postgres", b.DSN())
			require.NoError(t, err)
			defer db.Close()
			require.Equal(t, s.Port(), serverPort(t, db), "query through pgbouncer")
			require.Contains(t, b.LogTail(50), "listening on 127.0.0.1:"+strconv.Itoa(b.Port()))
			checkPooling(t, db, mode)

			dir := b.Dir()
			require.NoError(t, b.Close())
			require.NoError(t, b.Close(), "second Close")
			require.Equal(t, before, waiters(), "Close did not join the wait goroutine")
			require.NoDirExists(t, dir)
			_, err = net.DialTimeout("tcp", b.Addr(), time.Second)
			require.Error(t, err, "pgbouncer still listens after Close")
		})
	}
}

// checkPooling shows the pool mode of pgbouncer at work behind db. c1 sets
// work_mem for its session, then c2 opens a transaction, taking the server
// connection c1 last released if c1 released it (pgbouncer reuses the most
// recently released one first). In session mode c1 keeps its backend and
// setting; in transaction mode its next statement runs on another backend,
// without the setting.
func checkPooling(t *testing.T, db *sql.DB, mode string) {
	t.Helper()
	ctx := context.Background()
	c1, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c1.Close()
	c2, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c2.Close()

	_, err = c1.ExecContext(ctx, "SET work_mem = '7MB'")
	require.NoError(t, err)
	pid1 := backendPid(t, c1)
	tx, err := c2.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	pid2 := backendPid(t, tx)
	pid3 := backendPid(t, c1)
	var workMem string
	require.NoError(t, c1.QueryRowContext(ctx, "SHOW work_mem").Scan(&workMem))

	if mode == "session" {
		require.NotEqual(t, pid1, pid2, "two sessions share a backend")
		require.Equal(t, pid1, pid3, "a session moved to another backend")
		require.Equal(t, "7MB", workMem, "a session lost its setting")
		return
	}
	require.Equal(t, pid1, pid2, "the backend c1 released did not go to c2")
	require.NotEqual(t, pid1, pid3, "c1 kept its backend between transactions")
	require.NotEqual(t, "7MB", workMem, "c1 kept its session state between transactions")
}

func TestPgBouncerMissing(t *testing.T) {
	t.Setenv(EnvPgBouncer, filepath.Join(t.TempDir(), "pgbouncer"))
	_, err := findPgBouncer()
	require.ErrorContains(t, err, "apt-get install pgbouncer")
	require.ErrorContains(t, err, EnvPgBouncer)

	t.Setenv(EnvPgBouncer, "")
	t.Setenv("PATH", t.TempDir())
	defer func(old string) { pgbouncerFallback = old }(pgbouncerFallback)
	pgbouncerFallback = filepath.Join(t.TempDir(), "pgbouncer")
	_, err = StartPgBouncer(&Server{}, "session")
	require.EqualError(t, err, errNoPgBouncer)
	for _, want := range []string{"apt-get install pgbouncer", EnvPgBouncer, "PATH", "/usr/sbin/pgbouncer"} {
		require.Contains(t, errNoPgBouncer, want)
	}
}
