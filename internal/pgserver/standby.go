package pgserver

import (
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// standbySeq numbers the standbys of the process, for their unique
// application names.
var standbySeq atomic.Int64

// StartStandby starts a streaming hot standby of the running server s:
// pg_basebackup -R -X stream copies s into a new temporary directory (where
// the binaries lack pg_basebackup, s is stopped for a copy of its data
// directory and started again), and
// postgres runs on it on a free port of 127.0.0.1, with a primary_conninfo
// carrying an application_name unique to the standby (ApplicationName).
//
// With sync, the standby becomes the only synchronous standby of s: s gets
// synchronous_standby_names set to that name and synchronous_commit on
// (ALTER SYSTEM and pg_reload_conf()), so commits on s wait for it; they
// hang while it is down, until synchronous_standby_names is reset.
//
// StartStandby returns once pg_stat_replication on s shows the standby
// streaming, and with sync its sync_state 'sync'. The standby is a Server
// of its own, with its own temporary directory: Close s and it
// independently. The standby does not inherit the synchronous_standby_names
// of s, so that once promoted it does not wait for standbys it lacks. When
// StartStandby fails after setting synchronous_standby_names, it resets it.
func (s *Server) StartStandby(sync bool) (*Server, error) {
	if s.external {
		return nil, ErrExternal
	}
	if s.PID() == 0 {
		return nil, errors.New("pgserver: the primary is not running")
	}
	st := &Server{binDir: s.binDir, version: s.version, cred: s.cred}
	st.appName = fmt.Sprintf("pgserver_standby_%d_%d", os.Getpid(), standbySeq.Add(1))
	if err := st.baseBackup(s); err != nil {
		_ = st.removeTmp() // the backup error is the one to report
		return nil, err
	}
	if err := st.startOnFreePort(); err != nil {
		_ = st.removeTmp() // the start error is the one to report
		return nil, err
	}
	var err error
	if sync {
		err = s.requireSync(st.appName)
	}
	if err == nil {
		err = s.waitStreaming(st, sync)
	}
	if err != nil {
		// The replication error is the one to report.
		_ = st.Close()
		if sync {
			_ = s.Exec("ALTER SYSTEM RESET synchronous_standby_names")
			_ = s.Exec("SELECT pg_reload_conf()")
		}
		return nil, err
	}
	return st, nil
}

// ApplicationName returns the application_name a standby started by
// StartStandby gives its primary, as pg_stat_replication shows it; it is
// empty for other servers.
func (s *Server) ApplicationName() string { return s.appName }

// baseBackup creates s's temporary directory and copies primary's data
// directory into it with pg_basebackup, with a recovery configuration.
func (s *Server) baseBackup(primary *Server) error {
	dir, err := makeTmp(tempParent(s.cred), "pgserver-standby-", s.cred)
	if err != nil {
		return err
	}
	s.tmpDir = dir
	s.dataDir = filepath.Join(dir, "data")
	s.logPath = filepath.Join(dir, "postgres.log")
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", primary.port, s.appName)
	if !isExecutable(filepath.Join(s.binDir, "pg_basebackup")) {
		if err := s.coldCopy(primary, conninfo); err != nil {
			return err
		}
	} else if out, err := s.runTool(dir, "pg_basebackup",
		"--pgdata="+s.dataDir,
		"--dbname="+conninfo,
		"--write-recovery-conf",
		"--wal-method=stream",
		"--checkpoint=fast",
		"--no-sync",
	); err != nil {
		return fmt.Errorf("pgserver: pg_basebackup from %s failed: %w%s\n%s", primary.Addr(), err, s.permHint(err), lastLines(out, 30))
	}
	auto := filepath.Join(s.dataDir, "postgresql.auto.conf")
	if err := dropSetting(auto, "synchronous_standby_names"); err != nil {
		return err
	}
	// A standby whose primary restarts connects again within this, not the
	// default 5 s.
	return appendFile(auto, "wal_retrieve_retry_interval = '100ms'\n")
}

// coldCopy is baseBackup for server binaries that come without
// pg_basebackup (the npm packages of server binaries): it stops primary,
// copies its data directory (a cleanly shut down cluster is a consistent
// base backup), starts primary again on its port, and configures the copy
// as pg_basebackup -R would: standby.signal, and primary_conninfo set to
// conninfo. Sessions open on primary are ended by the stop.
func (s *Server) coldCopy(primary *Server, conninfo string) (err error) {
	const streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
	var standbys int
	if err := queryRowDSN(primary.dsn, streaming, &standbys); err != nil {
		return err
	}
	if err := primary.Stop(); err != nil {
		return err
	}
	defer func() {
		// The standbys the stop cut off reconnect (see baseBackup's retry
		// interval) before the new one is started.
		back := pollUntil(readyTimeout, "standbys of "+primary.Addr()+" back", func() error {
			var n int
			err := queryRowDSN(primary.dsn, streaming, &n)
			if err == nil && n < standbys {
				err = fmt.Errorf("%d of %d standbys streaming", n, standbys)
			}
			return err
		})
		if err == nil {
			err = back
		}
	}()
	out, err := exec.Command("cp", "-a", primary.dataDir, s.dataDir).CombinedOutput()
	if rerr := primary.Restart(); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("pgserver: copying the data directory of %s: %w\n%s", primary.Addr(), err, out)
	}
	signal := filepath.Join(s.dataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(signal, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
	}
	setting := "primary_conninfo = '" + strings.ReplaceAll(conninfo, "'", "''") + "'\n"
	return appendFile(filepath.Join(s.dataDir, "postgresql.auto.conf"), setting)
}

// dropSetting removes the lines setting name from the configuration file
// path, keeping its owner and mode.
func dropSetting(path, name string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	var kept []string
	for _, line := range strings.SplitAfter(string(b), "\n") {
		f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '=' })
		if len(f) > 0 && f[0] == name {
			continue
		}
		kept = append(kept, line)
	}
	if err := os.WriteFile(path, []byte(strings.Join(kept, "")), 0); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

// requireSync makes the standby named name the only synchronous standby of
// s, with synchronous_commit on, and waits until new sessions see it so.
func (s *Server) requireSync(name string) error {
	names := `"` + name + `"`
	for _, q := range []string{
		"ALTER SYSTEM SET synchronous_standby_names = " + quoteLiteral(names),
		"ALTER SYSTEM SET synchronous_commit = on",
		"SELECT pg_reload_conf()",
	} {
		if err := s.Exec(q); err != nil {
			return err
		}
	}
	// The reload is asynchronous.
	return pollUntil(readyTimeout, "synchronous replication settings on "+s.Addr(), func() error {
		var got, commit string
		err := queryRowDSN(s.dsn, "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit')", &got, &commit)
		if err == nil && (got != names || commit != "on") {
			err = fmt.Errorf("synchronous_standby_names %q, synchronous_commit %q", got, commit)
		}
		return err
	})
}

// waitStreaming waits until pg_stat_replication on s shows the standby st
// streaming, with sync_state 'sync' when sync.
func (s *Server) waitStreaming(st *Server, sync bool) error {
	q := "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = " + quoteLiteral(st.appName)
	err := pollUntil(readyTimeout, "streaming of "+st.appName, func() error {
		var state, syncState string
		err := queryRowDSN(s.dsn, q, &state, &syncState)
		if err == nil && (state != "streaming" || sync && syncState != "sync") {
			err = fmt.Errorf("state %q, sync_state %q", state, syncState)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w; standby log %s:\n%s", err, st.logPath, st.LogTail(20))
	}
	return nil
}

// Promote turns a standby into a primary (pg_promote) and returns once it
// accepts writes: a new session sees pg_is_in_recovery() false. It fails on
// a server that is not in recovery.
func (s *Server) Promote() error {
	if s.external {
		return ErrExternal
	}
	var done bool
	if err := queryRowDSN(s.dsn, "SELECT pg_promote(true, 60)", &done); err != nil {
		return err
	}
	if !done {
		return fmt.Errorf("pgserver: promotion of %s did not finish within 60s; log %s:\n%s", s.Addr(), s.logPath, s.LogTail(20))
	}
	return pollUntil(readyTimeout, "end of recovery on "+s.Addr(), func() error {
		var inRecovery bool
		err := queryRowDSN(s.dsn, "SELECT pg_is_in_recovery()", &inRecovery)
		if err == nil && inRecovery {
			err = errors.New("still in recovery")
		}
		return err
	})
}

// Detach cuts a standby off from its primary, as a network partition would:
// its primary_conninfo is cleared (ALTER SYSTEM and pg_reload_conf()), and
// Detach returns once its WAL receiver has stopped. The standby keeps what
// it received; nothing the primary commits from then on reaches it, which
// makes the loss of an asynchronous failover deterministic. Promote works
// on a detached standby. Detach a synchronous standby only after its
// primary is gone, or the primary's commits hang.
func (s *Server) Detach() error {
	if s.external {
		return ErrExternal
	}
	for _, q := range []string{"ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"} {
		if err := s.Exec(q); err != nil {
			return err
		}
	}
	return pollUntil(readyTimeout, "end of streaming on "+s.Addr(), func() error {
		var n int
		err := queryRowDSN(s.dsn, "SELECT count(*) FROM pg_stat_wal_receiver", &n)
		if err == nil && n != 0 {
			err = errors.New("the WAL receiver still runs")
		}
		return err
	})
}

// CaughtUp waits until the standby st has replayed everything its primary
// s had written when CaughtUp was called.
func (s *Server) CaughtUp(st *Server) error {
	if s.external || st.external {
		return ErrExternal
	}
	var lsn string
	if err := queryRowDSN(s.dsn, "SELECT pg_current_wal_lsn()::text", &lsn); err != nil {
		return err
	}
	q := "SELECT pg_last_wal_replay_lsn() >= " + quoteLiteral(lsn) + "::pg_lsn"
	return pollUntil(readyTimeout, "replay of "+lsn+" on "+st.Addr(), func() error {
		var done bool
		err := queryRowDSN(st.dsn, q, &done)
		if err == nil && !done {
			err = errors.New("not replayed yet")
		}
		return err
	})
}

// MultiHostDSN returns a DSN listing the servers in order that lib/pq and
// pgx v5 both accept, which connects to the first of them accepting writes
// (target_session_attrs=read-write), as user postgres to database postgres:
//
//	postgres://postgres@127.0.0.1,127.0.0.1/postgres?port=P1,P2&sslmode=disable&target_session_attrs=read-write
//
// The ports go in the port parameter because lib/pq reads a
// host:port,host:port list in the host part of a URL as host names.
func MultiHostDSN(servers ...*Server) string {
	hosts := make([]string, len(servers))
	ports := make([]string, len(servers))
	for i, s := range servers {
		host, port, err := net.SplitHostPort(s.Addr())
		if err != nil {
			host, port = "", ""
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		hosts[i], ports[i] = host, port
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/postgres?port=" + strings.Join(ports, ",") +
		"&sslmode=disable&target_session_attrs=read-write"
}

// pollUntil calls check every 50ms until it returns nil, or until timeout
// passes: the error then names what was awaited and check's last error.
func pollUntil(timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if errors.Is(err, sql.ErrNoRows) {
				err = errors.New("no row yet")
			}
			return fmt.Errorf("pgserver: waiting for %s: not there after %v: %w", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
