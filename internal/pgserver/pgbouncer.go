package pgserver

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvPgBouncer names the pgbouncer binary StartPgBouncer runs.
const EnvPgBouncer = "PGLOCK_TEST_PGBOUNCER"

// pgbouncerFallback is where StartPgBouncer looks last for the binary, the
// place of Debian's pgbouncer package.
var pgbouncerFallback = "/usr/sbin/pgbouncer"

// errNoPgBouncer is the message returned when no pgbouncer is found.
const errNoPgBouncer = "pgserver: no pgbouncer binary found (looked at $" + EnvPgBouncer +
	", PATH and /usr/sbin/pgbouncer); install it with `apt-get install pgbouncer` or set " + EnvPgBouncer

// ErrNoPgBouncer is returned, or wrapped, by StartPgBouncer when it finds
// no pgbouncer binary to run.
var ErrNoPgBouncer = errors.New(errNoPgBouncer)

// InstallPgBouncer is the command that installs pgbouncer where the tests
// run (Debian and Ubuntu, as CI).
const InstallPgBouncer = "apt-get install pgbouncer"

// PgBouncer is a pgbouncer process in front of a Server, listening on a
// free port of 127.0.0.1.
type PgBouncer struct {
	mode    string
	bin     string
	tmpDir  string
	logPath string
	port    int
	cred    *syscall.Credential

	mu     sync.Mutex
	proc   *proc // nil once stopped
	closed bool
}

// StartPgBouncer starts pgbouncer in front of target, with pool_mode mode
// ("session" or "transaction"), and returns once a query through it
// succeeds. It accepts every user known to target without a password
// (auth_type trust) for any database (a "*" entry), up to 1000 clients,
// with pools of 50 server connections per user and database, and retries a
// failed server login after a second. It finds the binary at
// $PGLOCK_TEST_PGBOUNCER, else on PATH, else at /usr/sbin/pgbouncer. As
// root, pgbouncer runs as the postgres OS user, since it refuses root.
func StartPgBouncer(target *Server, mode string) (*PgBouncer, error) {
	if mode != "session" && mode != "transaction" {
		return nil, fmt.Errorf("pgserver: pgbouncer pool mode %q: want session or transaction", mode)
	}
	if target == nil || target.external {
		return nil, fmt.Errorf("pgserver: pgbouncer needs a server of the package: %w", ErrExternal)
	}
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{mode: mode, bin: bin}
	if os.Geteuid() == 0 {
		if b.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	if b.tmpDir, err = makeTmp(tempParent(b.cred), "pgbouncer-", b.cred); err != nil {
		return nil, err
	}
	b.logPath = filepath.Join(b.tmpDir, "pgbouncer.log")
	if err := b.startOnFreePort(target.port); err != nil {
		_ = os.RemoveAll(b.tmpDir) // the start error is the one to report
		return nil, err
	}
	return b, nil
}

// findPgBouncer returns the pgbouncer binary to run.
func findPgBouncer() (string, error) {
	if p := os.Getenv(EnvPgBouncer); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("pgserver: %s=%q is not an executable file; install pgbouncer with `apt-get install pgbouncer` or fix %s: %w", EnvPgBouncer, p, EnvPgBouncer, ErrNoPgBouncer)
		}
		return filepath.Abs(p)
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return filepath.Abs(p)
	}
	if isExecutable(pgbouncerFallback) {
		return pgbouncerFallback, nil
	}
	return "", ErrNoPgBouncer
}

// isExecutable reports whether path is a file with an execute permission
// bit set.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// startOnFreePort writes the configuration for a free port and starts
// pgbouncer on it, trying other ports when another process grabs the one
// chosen first.
func (b *PgBouncer) startOnFreePort(targetPort int) error {
	if err := b.writeFile("userlist.txt", `"postgres" ""`+"\n"); err != nil {
		return err
	}
	const attempts = 5
	for i := 1; ; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		b.port = port
		if err := b.writeFile("pgbouncer.ini", b.ini(targetPort)); err != nil {
			return err
		}
		err = b.start()
		if err != nil && i < attempts && strings.Contains(err.Error(), "Address already in use") {
			continue
		}
		return err
	}
}

// ini returns the configuration file of b, in front of the server
// listening on 127.0.0.1:targetPort.
func (b *PgBouncer) ini(targetPort int) string {
	return fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
pidfile =
logfile = %s
auth_type = trust
auth_file = %s
admin_users = postgres
pool_mode = %s
max_client_conn = 1000
default_pool_size = 50
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
`, targetPort, b.port, b.logPath, filepath.Join(b.tmpDir, "userlist.txt"), b.mode)
}

// writeFile writes a file of b's temporary directory, readable by the user
// running pgbouncer.
func (b *PgBouncer) writeFile(name, text string) error {
	if err := os.WriteFile(filepath.Join(b.tmpDir, name), []byte(text), 0o644); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

// start runs pgbouncer and waits until a query through it succeeds.
func (b *PgBouncer) start() error {
	logFile, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	logStart, _ := logFile.Seek(0, io.SeekEnd)
	if b.cred != nil {
		// pgbouncer opens the log file itself too.
		if err := logFile.Chown(int(b.cred.Uid), int(b.cred.Gid)); err != nil {
			logFile.Close()
			return fmt.Errorf("pgserver: %w", err)
		}
	}
	// -q: the log goes to the log file only; stderr, the same file, gets
	// what pgbouncer writes before it opens it.
	cmd := exec.Command(b.bin, "-q", filepath.Join(b.tmpDir, "pgbouncer.ini"))
	cmd.Dir = b.tmpDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = procAttr(b.cred)
	p, err := startProc(cmd, logFile)
	if err != nil {
		return fmt.Errorf("pgserver: starting %s: %w", b.bin, err)
	}
	err = waitAnswers(p, b.DSN(), "pgbouncer", b.Addr(), func() string {
		return fmt.Sprintf("log %s:\n%s", b.logPath, tailSince(b.logPath, logStart, 40))
	})
	if err == nil {
		err = b.answersItself()
	}
	if err != nil {
		_ = p.kill() // the startup error is the one to report
		logFile.Close()
		return err
	}
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	return nil
}

// answersItself checks that the pgbouncer answering on b's port is b's own,
// by the log file its admin console reports: a pgbouncer of another test
// may have taken the port between freePort and b's start, and then b's
// process fails to listen while the other one answers. That case is
// reported as "Address already in use", so that startOnFreePort tries
// another port.
func (b *PgBouncer) answersItself() error {
	db, err := openDB(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pgbouncer?sslmode=disable", b.port))
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query("SHOW CONFIG")
	if err != nil {
		return fmt.Errorf("pgserver: pgbouncer's admin console: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("pgserver: pgbouncer's admin console: %w", err)
	}
	for rows.Next() {
		row := make([]sql.NullString, len(cols))
		dest := make([]any, len(cols))
		for i := range row {
			dest[i] = &row[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("pgserver: pgbouncer's admin console: %w", err)
		}
		if len(row) > 1 && row[0].String == "logfile" {
			if row[1].String != b.logPath {
				return fmt.Errorf("pgserver: Address already in use: port %d answers with the pgbouncer of %s", b.port, row[1].String)
			}
			return nil
		}
	}
	return fmt.Errorf("pgserver: pgbouncer's admin console shows no logfile: %w", rows.Err())
}

// DSN returns the URL of pgbouncer, for user postgres and database
// postgres: postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
func (b *PgBouncer) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", b.port)
}

// Addr returns host:port of pgbouncer.
func (b *PgBouncer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Port returns the TCP port pgbouncer listens on.
func (b *PgBouncer) Port() int { return b.port }

// Mode returns the pool mode: "session" or "transaction".
func (b *PgBouncer) Mode() string { return b.mode }

// Dir returns the temporary directory holding the configuration and the
// log of pgbouncer.
func (b *PgBouncer) Dir() string { return b.tmpDir }

// LogTail returns up to the last n lines of the pgbouncer log.
func (b *PgBouncer) LogTail(n int) string { return tailFile(b.logPath, n) }

// Close stops pgbouncer (immediate shutdown: SIGTERM; SIGKILL after a
// while), waits for it to exit, and removes its temporary directory. It is
// idempotent.
func (b *PgBouncer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.stopLocked()
	if rerr := os.RemoveAll(b.tmpDir); rerr != nil && err == nil {
		err = fmt.Errorf("pgserver: %w", rerr)
	}
	return err
}

// stopLocked sends SIGTERM (immediate shutdown) and waits for pgbouncer to
// exit, killing it after stopTimeout.
func (b *PgBouncer) stopLocked() error {
	p := b.proc
	if p == nil {
		return nil
	}
	b.proc = nil
	defer p.logFile.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		if err := p.kill(); err != nil {
			return err
		}
		return fmt.Errorf("pgserver: pgbouncer did not stop within %v and was killed; log %s:\n%s", stopTimeout, b.logPath, b.LogTail(20))
	}
	// pgbouncer 1.18 exits with status 1 on SIGTERM ("fast exit").
	var exitErr *exec.ExitError
	if p.err != nil && !(errors.As(p.err, &exitErr) && exitErr.ExitCode() == 1) {
		return fmt.Errorf("pgserver: pgbouncer exited with %w; log %s:\n%s", p.err, b.logPath, b.LogTail(20))
	}
	return nil
}
