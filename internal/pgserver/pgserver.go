// Package pgserver runs throwaway PostgreSQL clusters for tests and demos.
//
// Start finds the PostgreSQL server binaries installed on the machine,
// initializes a fresh cluster in a temporary directory and runs `postgres` as
// a direct child process listening on a free port of 127.0.0.1. The child is
// started with a parent-death signal, so a crashed test binary never leaves a
// server behind. When the environment variable PGLOCK_TEST_DSN is set, Start
// starts nothing and hands back an external server with that DSN instead.
//
// StartWith tunes the new cluster. For failover tests, StartStandby adds a
// streaming hot standby to a running server, CaughtUp waits for its replay,
// Detach cuts it off from its primary, Promote turns it into a primary,
// Kill crashes a server, and MultiHostDSN lists servers for a client to
// find the writable one. StartPgBouncer puts a real pgbouncer in
// front of a server.
//
// The package talks to the servers through lib/pq and does not import
// "testing", so command line demos can use it as well.
package pgserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables understood by Start.
const (
	// EnvDSN names an external server to use instead of starting one.
	EnvDSN = "PGLOCK_TEST_DSN"
	// EnvPGBin names the directory holding initdb and postgres.
	EnvPGBin = "PGLOCK_TEST_PGBIN"
)

// Timeouts used while starting and stopping servers.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// ErrExternal is returned by the methods that cannot act on an external
// server (one given through PGLOCK_TEST_DSN).
var ErrExternal = errors.New("pgserver: operation not supported on an external server (" + EnvDSN + ")")

// errNoBinaries is the message returned when no server binaries are found.
const errNoBinaries = "pgserver: no PostgreSQL server binaries found (looked in $" + EnvPGBin +
	", PATH and /usr/lib/postgresql/*/bin); install them with `apt-get install postgresql`" +
	" or set " + EnvPGBin + " or " + EnvDSN

// Server is a throwaway PostgreSQL cluster (or an external one).
type Server struct {
	dsn      string
	external bool

	binDir  string
	version string
	tmpDir  string
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential
	appName string // application_name of a standby, as its primary sees it

	mu     sync.Mutex
	proc   *proc // the running postmaster, nil when stopped
	closed bool
}

// Options tune a server started by StartWith. The zero value gives the
// server Start gives.
type Options struct {
	// SynchronousCommit leaves synchronous_commit on, PostgreSQL's own
	// default. When false it is off, which makes commits faster; fsync is
	// off either way, since the clusters are throwaway.
	SynchronousCommit bool
	// Settings are run-time parameters, name to value, written to
	// postgresql.conf after the package's defaults, so they override them
	// (e.g. "fsync": "on"). ALTER SYSTEM can still change them later.
	Settings map[string]string
	// Local starts a cluster of its own even when PGLOCK_TEST_DSN is set:
	// for tests that must kill, restart or replicate their server.
	Local bool
}

// Start returns a server to test against. If the environment variable
// PGLOCK_TEST_DSN is set, it returns an external server with that DSN and
// starts nothing. Otherwise it finds the PostgreSQL binaries
// ($PGLOCK_TEST_PGBIN first, then initdb on PATH, then the highest
// /usr/lib/postgresql/*/bin), initializes a cluster in a fresh temporary
// directory and starts it on a free port of 127.0.0.1. When the process runs
// as root, initdb and postgres run as the "postgres" OS user. It is
// StartWith(Options{}).
func Start() (*Server, error) { return StartWith(Options{}) }

// StartWith is Start with opts applied to the new cluster. Unless
// opts.Local is set, the options do not apply to an external server, which
// is returned as is.
func StartWith(opts Options) (*Server, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" && !opts.Local {
		return &Server{dsn: dsn, external: true}, nil
	}
	conf, err := opts.conf()
	if err != nil {
		return nil, err
	}
	s, err := newServer()
	if err != nil {
		return nil, err
	}
	if err := s.init(conf); err != nil {
		_ = s.removeTmp() // the start error is the one to report
		return nil, err
	}
	if err := s.startOnFreePort(); err != nil {
		_ = s.removeTmp() // the start error is the one to report
		return nil, err
	}
	return s, nil
}

// newServer returns a server, not yet initialized, using the binaries
// FindBinDir finds and the credential of the postgres OS user when root.
func newServer() (*Server, error) {
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	s := &Server{binDir: binDir}
	if s.version, err = binVersion(binDir); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// startOnFreePort starts the initialized cluster on a free port, trying
// other ports when another process grabs the one chosen first.
func (s *Server) startOnFreePort() error {
	const attempts = 5
	for i := 1; ; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		s.port = port
		s.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
		err = s.start()
		// Another process may have grabbed the port between freePort and
		// the bind of postgres: try again on another one.
		if err != nil && i < attempts && strings.Contains(err.Error(), "could not bind") {
			continue
		}
		return err
	}
}

// defaultSettings are the run-time parameters of every cluster, tuned for
// throwaway data.
var defaultSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "400",
	"logging_collector":  "off",
	"log_line_prefix":    "%m [%p] ",
}

// settingName is what a run-time parameter name looks like.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// conf returns the lines to append to postgresql.conf: the defaults
// overridden by o, sorted by name.
func (o Options) conf() (string, error) {
	settings := make(map[string]string, len(defaultSettings)+len(o.Settings))
	for k, v := range defaultSettings {
		settings[k] = v
	}
	if o.SynchronousCommit {
		delete(settings, "synchronous_commit")
	}
	for k, v := range o.Settings {
		if !settingName.MatchString(k) {
			return "", fmt.Errorf("pgserver: bad setting name %q", k)
		}
		settings[k] = v
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("\n# Settings of a throwaway cluster.\n")
	quote := strings.NewReplacer(`\`, `\\`, `'`, `''`, "\n", `\n`, "\r", `\r`)
	for _, k := range names {
		fmt.Fprintf(&b, "%s = '%s'\n", k, quote.Replace(settings[k]))
	}
	return b.String(), nil
}

// DSN returns the connection string of the server, in the URL form that
// lib/pq and pgx understand, e.g.
// postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
func (s *Server) DSN() string { return s.dsn }

// External reports whether the server was given by PGLOCK_TEST_DSN.
func (s *Server) External() bool { return s.external }

// Version returns the PostgreSQL version of the binaries, e.g. "15.18"; it
// is empty for an external server.
func (s *Server) Version() string { return s.version }

// BinDir returns the directory of the server binaries; empty if external.
func (s *Server) BinDir() string { return s.binDir }

// Dir returns the temporary directory holding the data directory and the
// log file; empty if external.
func (s *Server) Dir() string { return s.tmpDir }

// DataDir returns the data directory of the cluster; empty if external.
func (s *Server) DataDir() string { return s.dataDir }

// LogPath returns the path of the server log file; empty if external.
func (s *Server) LogPath() string { return s.logPath }

// Port returns the TCP port the server listens on; 0 if external.
func (s *Server) Port() int { return s.port }

// Addr returns host:port of the server; for an external server it is taken
// from the DSN (its first host), or empty if the DSN does not parse.
func (s *Server) Addr() string {
	if !s.external {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	}
	addr, err := dsnAddr(s.dsn)
	if err != nil {
		return ""
	}
	return addr
}

// PID returns the process id of the postmaster (useful to SIGSTOP it), or 0
// if the server is external or not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// LogTail returns up to the last n lines of the server log.
func (s *Server) LogTail(n int) string {
	if s.logPath == "" {
		return ""
	}
	return tailFile(s.logPath, n)
}

// Stop shuts the server down (fast shutdown: SIGINT) and waits for it to
// exit. The data directory is kept, so Restart can start it again.
func (s *Server) Stop() error {
	return s.whileOpen(s.stopLocked)
}

// Kill stops the server hard, like a crashed machine: it SIGKILLs the
// postmaster and all its children (backends, background workers, WAL
// senders or receiver) with their process groups, and returns once all of
// them are gone, so clients see their connections die at once. The data
// directory is kept: Restart starts the server again through crash
// recovery, and Close cleans up. Commits not yet written to the WAL are
// lost, as on a real crash: with Start's synchronous_commit=off, that is
// those of the last fraction of a second. Kill of a stopped server does
// nothing.
func (s *Server) Kill() error {
	return s.whileOpen(s.killLocked)
}

// Restart starts the server again after Stop or Kill, on the same port and
// data directory, and waits until it accepts connections.
func (s *Server) Restart() error {
	return s.whileOpen(func() error {
		if s.proc != nil {
			return errors.New("pgserver: server is running; Stop it before Restart")
		}
		return s.startLocked()
	})
}

// whileOpen runs f with s.mu held, for a server of our own that is not
// closed.
func (s *Server) whileOpen(f func() error) error {
	if s.external {
		return ErrExternal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgserver: server is closed")
	}
	return f()
}

// Close stops the server and removes its temporary directory. It is
// idempotent, and a no-op for an external server.
func (s *Server) Close() error {
	if s.external {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.stopLocked()
	if rerr := s.removeTmp(); err == nil {
		err = rerr
	}
	return err
}

// CreateDatabase creates a database named name and returns its DSN. For an
// external server it works with whatever the DSN gives lib/pq (password,
// TLS, ...).
func (s *Server) CreateDatabase(name string) (dsn string, err error) {
	if name == "" {
		return "", errors.New("pgserver: empty database name")
	}
	dsn, err = replaceDatabase(s.dsn, name)
	if err != nil {
		return "", err
	}
	if err := s.Exec("CREATE DATABASE " + quoteIdent(name)); err != nil {
		return "", err
	}
	return dsn, nil
}

// Exec runs query (one or more SQL statements, no parameters) on the
// server's default database through a fresh lib/pq connection. A server
// error is a *pq.Error in the returned chain.
func (s *Server) Exec(query string) error {
	return execDSN(s.dsn, query, queryTimeout)
}

// FindBinDir returns the directory holding the PostgreSQL server binaries
// (initdb and postgres): $PGLOCK_TEST_PGBIN if set, else the directory of
// initdb found on PATH (symbolic links resolved), else the highest
// /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if dir := os.Getenv(EnvPGBin); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("pgserver: %s=%q: %w", EnvPGBin, dir, err)
		}
		if !hasServerBinaries(abs) {
			return "", fmt.Errorf("pgserver: %s=%q does not contain initdb and postgres", EnvPGBin, dir)
		}
		return abs, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			if abs, err := filepath.Abs(filepath.Dir(resolved)); err == nil && hasServerBinaries(abs) {
				return abs, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[i])), filepath.Base(filepath.Dir(dirs[j])))
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if hasServerBinaries(dirs[i]) {
			return dirs[i], nil
		}
	}
	return "", errors.New(errNoBinaries)
}

// Main starts a server, sets *dsn for the package's tests, runs m.Run(),
// closes the server and returns the exit code, to be used from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgserver.Main(m, &dsn)) }
//
// If Start fails it prints the error to stderr and returns 1: it never
// skips silently.
func Main(m interface{ Run() int }, dsn *string) int {
	return run(m, func(s *Server) { *dsn = s.DSN() })
}

// MainServer is like Main but hands back the *Server itself.
func MainServer(m interface{ Run() int }, srv **Server) int {
	return run(m, func(s *Server) { *srv = s })
}

// stderr receives the errors of Main and MainServer.
var stderr io.Writer = os.Stderr

func run(m interface{ Run() int }, set func(*Server)) int {
	s, err := Start()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	set(s)
	code := m.Run()
	closed = true
	if err := s.Close(); err != nil {
		fmt.Fprintln(stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionLess compares dotted numeric versions ("9.6" < "13" < "15.2").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errx := strconv.Atoi(as[i])
		y, erry := strconv.Atoi(bs[i])
		if errx != nil || erry != nil {
			if as[i] != bs[i] {
				return as[i] < bs[i]
			}
			continue
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// binVersion runs `postgres --version` and returns e.g. "15.18".
func binVersion(binDir string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgserver: %s --version: %w", filepath.Join(binDir, "postgres"), err)
	}
	// postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "", fmt.Errorf("pgserver: unexpected `postgres --version` output %q", out)
	}
	return f[2], nil
}

// postgresCredential returns the credential of the "postgres" OS user, which
// runs the server when the test process is root (initdb and postgres refuse
// to run as root).
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root, so the server must run as the `postgres` OS user, but looking it up failed: %w (install the postgresql package or create the user with `useradd --system postgres`)", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: bad uid %q for user postgres", u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: bad gid %q for user postgres", u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// tempParent returns the directory in which to create a temporary
// directory for a child running with cred. When it runs as another user,
// every ancestor must be traversable by others; if $TMPDIR is not, /tmp is
// used.
func tempParent(cred *syscall.Credential) string {
	dir := os.TempDir()
	if cred == nil {
		return dir
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == filepath.Dir(d) {
			return dir
		}
	}
}

// init creates the temporary directory and runs initdb in it, then appends
// conf to postgresql.conf.
func (s *Server) init(conf string) error {
	dir, err := makeTmp(tempParent(s.cred), "pgserver-", s.cred)
	if err != nil {
		return err
	}
	s.tmpDir = dir
	s.dataDir = filepath.Join(dir, "data")
	s.logPath = filepath.Join(dir, "postgres.log")
	if out, err := s.runTool(dir, "initdb",
		"--pgdata="+s.dataDir,
		"--username=postgres",
		"--auth=trust",
		"--encoding=UTF8",
		"--no-locale",
		"--no-sync",
	); err != nil {
		return fmt.Errorf("pgserver: initdb (%s) failed: %w%s\n%s", s.binDir, err, s.permHint(err), lastLines(out, 30))
	}
	return appendFile(filepath.Join(s.dataDir, "postgresql.conf"), conf)
}

// runTool runs one of the server's programs in dir as the server's user,
// and returns what it printed.
func (s *Server) runTool(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.binDir, name), args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = procAttr(s.cred)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// appendFile appends text to the existing file path.
func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("pgserver: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

func (s *Server) permHint(err error) string {
	if s.cred == nil || !errors.Is(err, os.ErrPermission) {
		return ""
	}
	return fmt.Sprintf(" (the postgres OS user must be able to read and execute %s and traverse all its parent directories)", s.binDir)
}

// procAttr returns the attributes of a child process running with cred.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		// Kill the child if the test binary dies, whatever the cause.
		Pdeathsig: syscall.SIGKILL,
		// Keep terminal signals (^C) for the test binary only.
		Setpgid: true,
	}
}

// childEnv returns the environment of initdb and postgres: the current one
// less the libpq variables, in the C locale.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

func (s *Server) startLocked() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	logStart, _ := logFile.Seek(0, io.SeekEnd)
	// Unix sockets have a short path limit (~107 bytes); skip them when
	// the data directory is too deep.
	sockDir := s.dataDir
	if len(sockDir)+len("/.s.PGSQL.65535") > 100 {
		sockDir = ""
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"),
		"-D", s.dataDir,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+sockDir,
	)
	cmd.Dir = s.tmpDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = procAttr(s.cred)
	p, err := startProc(cmd, logFile)
	if err != nil {
		return fmt.Errorf("pgserver: starting postgres (%s): %w%s", s.binDir, err, s.permHint(err))
	}
	s.proc = p
	if err := s.waitReady(p, logStart); err != nil {
		_ = s.killLocked() // the startup error is the one to report
		return err
	}
	return nil
}

// waitReady polls the server until it answers a query, it exits, or
// readyTimeout passes.
func (s *Server) waitReady(p *proc, logStart int64) error {
	what := "postgres " + s.version
	return waitAnswers(p, s.dsn, what, s.Addr(), func() string {
		return fmt.Sprintf("log %s:\n%s", s.logPath, s.logSince(logStart))
	})
}

// waitAnswers polls dsn with a query until it answers, the process p exits,
// or readyTimeout passes. what names the process and log describes its log
// for the error messages.
func waitAnswers(p *proc, dsn, what, addr string, log func() string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.exited:
			exitErr := p.err
			if exitErr == nil {
				exitErr = errors.New("exit status 0")
			}
			return fmt.Errorf("pgserver: %s exited during startup (%w); %s", what, exitErr, log())
		default:
		}
		err := execDSN(dsn, "SELECT 1", connectTimeout)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgserver: %s did not answer on %s within %v (last error: %w); %s",
				what, addr, readyTimeout, err, log())
		}
		select {
		case <-p.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) logSince(off int64) string { return tailSince(s.logPath, off, 40) }

// tailSince returns up to the last n lines written to the file path from
// offset off on.
func tailSince(path string, off int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if off >= 0 && off <= int64(len(b)) {
		b = b[off:]
	}
	return lastLines(string(b), n)
}

// stopLocked sends SIGINT (fast shutdown) and waits for the postmaster to
// exit, killing it after stopTimeout.
func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	defer p.logFile.Close()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	// In case a test left it stopped with SIGSTOP.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		if err := p.kill(); err != nil {
			return err
		}
		return fmt.Errorf("pgserver: postgres did not stop within %v and was killed; log %s:\n%s", stopTimeout, s.logPath, s.LogTail(20))
	}
	if p.err != nil {
		return fmt.Errorf("pgserver: postgres exited with %w; log %s:\n%s", p.err, s.logPath, s.LogTail(20))
	}
	return nil
}

// killLocked kills the running postmaster, if any, with its process group.
func (s *Server) killLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	defer p.logFile.Close()
	return p.kill()
}

// makeTmp creates a temporary directory in parent, owned by cred's user
// when cred is not nil.
func makeTmp(parent, pattern string, cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir) // the chown error is the one to report
			return "", fmt.Errorf("pgserver: %w", err)
		}
	}
	return dir, nil
}

func (s *Server) removeTmp() error {
	if s.tmpDir == "" {
		return nil
	}
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
