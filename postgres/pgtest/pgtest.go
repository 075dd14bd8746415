// Package pgtest gives tests a real Postgres: a throwaway cluster per test
// binary, and a fresh, migrated database per test, cloned from a template in
// tens of milliseconds.
//
// A package whose tests need Postgres calls Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test asks for its own database:
//
//	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
//
// The cluster starts on the first NewDatabase, so a run that selects only
// tests without a database (go test -run TestParse) starts nothing, and a
// package that never calls Main never pays for one.
//
// The cluster lives in a new temporary directory: initdb, then postgres via
// pg_ctl on a free port of 127.0.0.1 and a unix socket inside that
// directory, with durability turned off for speed. It is stopped (pg_ctl stop
// -m immediate) and the directory removed when the tests end, fail, panic,
// time out or are interrupted: a small watchdog process, started before
// initdb, holds a pipe from the test binary and cleans up when the pipe
// closes, which happens however the binary exits. The harness never connects
// to a server it did not start: it talks to its own socket and checks the TCP
// port against its cluster's system identifier.
//
// initdb refuses to run as root, and tests and CI run as root: then the
// cluster runs as the "postgres" user (or "nobody" if there is none). The
// binaries initdb, pg_ctl and postgres are taken from PATH, else from the
// newest /usr/lib/postgresql/*/bin.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fieldpass/fieldpass/migrations"
)

// TemplateDatabase is the migrated database every NewDatabase is cloned from.
// It accepts no connections, so that cloning never waits on one.
const TemplateDatabase = "fieldpass_template"

// Superuser is the cluster's superuser; it needs no password.
const Superuser = "postgres"

// current is the harness of this test binary. It is the package's one
// variable because TestMain and the tests share nothing else through which
// Main could hand it over; it is set only by Main.
var current atomic.Pointer[harness]

// Main runs the tests of m with a cluster available to NewDatabase, then
// stops the cluster and removes its files, and exits with the tests' status
// (or 1 if cleaning up failed). Call it from TestMain; it does not return.
func Main(m *testing.M) {
	h := &harness{}
	if !current.CompareAndSwap(nil, h) {
		fmt.Fprintln(os.Stderr, "pgtest: Main called twice")
		os.Exit(2)
	}

	// On SIGINT/SIGTERM clean up before dying, so that the directory is gone
	// when the interrupted go test returns (the watchdog would get there too,
	// a moment later).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "pgtest: %v: stopping the cluster\n", sig)
			if err := h.stop(); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			}
			code := 1
			if s, ok := sig.(syscall.Signal); ok {
				code = 128 + int(s)
			}
			os.Exit(code)
		case <-done:
		}
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(done)
	if err := h.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// NewDatabase creates a database cloned from the migrated template, drops it
// (WITH (FORCE)) when tb ends, and returns its URL. The first call starts the
// cluster.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	c := mustCluster(tb)
	name := fmt.Sprintf("t%d_%s", c.seq.Add(1), dbNameRunes(tb.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The default strategy (WAL_LOG) measures several times faster here than
	// FILE_COPY, whose checkpoints cost more than copying a small template.
	if _, err := c.admin.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE "+TemplateDatabase); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.url(name)
}

// ClusterURL returns the URL of the cluster's maintenance database
// ("postgres") as the superuser, for tests that need to act on the cluster
// itself (create roles, terminate backends). The first call starts the
// cluster.
func ClusterURL(tb testing.TB) string {
	tb.Helper()
	return mustCluster(tb).url("postgres")
}

// NewRole creates a LOGIN role with no privileges and a name unique in the
// cluster (prefix, then a number), drops it when tb ends, and returns its
// name. Roles are cluster-wide: create a role before any database it gets
// privileges in, so that the database, cleaned up first, no longer holds it.
func NewRole(tb testing.TB, prefix string) string {
	tb.Helper()
	c := mustCluster(tb)
	name := fmt.Sprintf("%s_%d", prefix, c.seq.Add(1))
	ident := pgx.Identifier{name}.Sanitize()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.admin.Exec(ctx, "CREATE ROLE "+ident+" LOGIN"); err != nil {
		tb.Fatalf("pgtest: create role %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.admin.Exec(ctx, "DROP ROLE IF EXISTS "+ident); err != nil {
			tb.Errorf("pgtest: drop role %s: %v", name, err)
		}
	})
	return name
}

// NewEmptyDatabase creates a database owned by role owner with nothing
// migrated, drops it (WITH (FORCE)) when tb ends, and returns its URL as the
// superuser. The first call starts the cluster.
func NewEmptyDatabase(tb testing.TB, owner string) string {
	tb.Helper()
	c := mustCluster(tb)
	name := fmt.Sprintf("t%d_%s", c.seq.Add(1), dbNameRunes(tb.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	ident := pgx.Identifier{name}.Sanitize()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.admin.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+pgx.Identifier{owner}.Sanitize()+" TEMPLATE template0"); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.url(name)
}

// URLAs returns dbURL, a URL handed out by this package, with its user
// replaced by role. The cluster trusts its own connections: no password.
func URLAs(tb testing.TB, dbURL, role string) string {
	tb.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	u.User = url.User(role)
	return u.String()
}

func mustCluster(tb testing.TB) *cluster {
	tb.Helper()
	h := current.Load()
	if h == nil {
		tb.Fatal("pgtest: no cluster: call pgtest.Main(m) from this package's TestMain")
	}
	c, err := h.cluster()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return c
}

// dbNameRunes keeps the letters and digits of a test name, lowercased, so the
// database is recognisable in pg_stat_activity.
func dbNameRunes(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	return b.String()
}

// harness starts the cluster once, on first use, and stops it once.
type harness struct {
	mu      sync.Mutex // guards the fields below
	c       *cluster
	err     error // why the cluster could not start; returned to every caller
	started bool
	stopped bool
}

func (h *harness) cluster() (*cluster, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, errors.New("the cluster has been stopped")
	}
	if !h.started {
		h.started = true
		h.c, h.err = startCluster()
	}
	return h.c, h.err
}

func (h *harness) stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil
	}
	h.stopped = true
	if h.c == nil {
		return nil
	}
	return h.c.stop()
}

// cluster is one running Postgres and the directory it lives in.
type cluster struct {
	dir     string // temporary; holds data/, sock/ and postgres.log
	dataDir string
	sockDir string
	port    int
	admin   *pgxpool.Pool // over the socket, to the "postgres" database
	seq     atomic.Int64  // numbers the databases handed out

	watchdog   *exec.Cmd
	watchdogIn io.WriteCloser // closing it stops the cluster
}

// url returns a TCP URL of database db as the superuser.
func (c *cluster) url(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// socketConfig returns a connection config for database db over the unix
// socket in the cluster's own directory: no other server can answer there.
func (c *cluster) socketConfig(db string) (*pgx.ConnConfig, error) {
	q := url.Values{"host": {c.sockDir}, "port": {strconv.Itoa(c.port)}, "sslmode": {"disable"}}
	u := url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/" + db, RawQuery: q.Encode()}
	return pgx.ParseConfig(u.String())
}

// runAs is who runs initdb, pg_ctl and the watchdog.
type runAs struct {
	cred *syscall.Credential // nil: this process's user
	name string
}

func (r runAs) cmd(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	return cmd
}

// cleanEnv drops PG* variables, so that a PGDATA, PGPORT or PGHOST meant for
// another server cannot steer the harness towards it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// clusterUser picks the user to run the cluster as: ourselves, unless we are
// root, which initdb refuses.
func clusterUser() (runAs, error) {
	if os.Geteuid() != 0 {
		return runAs{name: "the current user"}, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return runAs{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name: name}, nil
	}
	return runAs{}, errors.New(`running as root, and initdb refuses root: create a "postgres" user (or "nobody") to run the test cluster as`)
}

// binaries finds initdb and pg_ctl (and checks for postgres, which pg_ctl
// runs from its own directory).
func binaries() (initdb, pgctl string, err error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		return ""
	}
	initdb, pgctl = find("initdb"), find("pg_ctl")
	var missing []string
	for name, p := range map[string]string{"initdb": initdb, "pg_ctl": pgctl, "postgres": find("postgres")} {
		if p == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return "", "", fmt.Errorf("PostgreSQL server binaries not found (%s): install them (Debian: apt-get install postgresql) and put their directory, e.g. /usr/lib/postgresql/15/bin, on PATH",
			strings.Join(missing, ", "))
	}
	return initdb, pgctl, nil
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func startCluster() (_ *cluster, err error) {
	initdb, pgctl, err := binaries()
	if err != nil {
		return nil, err
	}
	as, err := clusterUser()
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &cluster{dir: dir, dataDir: filepath.Join(dir, "data"), sockDir: filepath.Join(dir, "sock")}
	defer func() {
		if err != nil {
			if stopErr := c.stop(); stopErr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, stopErr)
			}
		}
	}()
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return c, fmt.Errorf("create socket directory: %w", err)
	}
	if as.cred != nil {
		for _, p := range []string{dir, c.sockDir} {
			if err := os.Chown(p, int(as.cred.Uid), int(as.cred.Gid)); err != nil {
				return c, fmt.Errorf("hand %s to user %s: %w", p, as.name, err)
			}
		}
	}

	// The watchdog comes first, so that whatever happens next, the directory
	// goes away. It runs in its own process group: a Ctrl-C meant for the
	// tests must not kill it before it has cleaned up.
	c.watchdog = as.cmd(dir, "/bin/sh", "-c", `
		read -r _
		if [ -f "$1/postmaster.pid" ]; then "$2" stop -D "$1" -m immediate -w -t 30 >/dev/null 2>&1; fi
		rm -rf "$3"`, "pgtest-watchdog", c.dataDir, pgctl, dir)
	c.watchdog.SysProcAttr.Setpgid = true
	if c.watchdogIn, err = c.watchdog.StdinPipe(); err != nil {
		return c, fmt.Errorf("start watchdog: %w", err)
	}
	if err := c.watchdog.Start(); err != nil {
		c.watchdog = nil
		return c, fmt.Errorf("start watchdog: %w", err)
	}

	out, err := as.cmd(dir, initdb, "-D", c.dataDir, "-U", Superuser, "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("initdb as %s: %v\n%s", as.name, err, out)
	}
	if err := c.start(as, pgctl); err != nil {
		return c, err
	}
	if err := c.connect(); err != nil {
		return c, err
	}
	if err := c.makeTemplate(); err != nil {
		return c, err
	}
	return c, nil
}

// start starts postgres on a free port, trying another if a different
// process takes the chosen one first.
func (c *cluster) start(as runAs, pgctl string) error {
	logFile := filepath.Join(c.dir, "postgres.log")
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
		// Appended settings override initdb's; the last one of a name wins, so
		// a retry simply appends again. Written to the file rather than passed
		// with -o, which pg_ctl hands to a shell.
		conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 200
shared_buffers = 32MB
fsync = off
full_page_writes = off
synchronous_commit = off
autovacuum = off
`, port, strings.ReplaceAll(c.sockDir, "'", "''"))
		f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("configure cluster: %w", err)
		}
		_, err = f.WriteString(conf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("configure cluster: %w", err)
		}

		out, err := as.cmd(c.dir, pgctl, "start", "-D", c.dataDir, "-l", logFile, "-w", "-t", "60", "-s").CombinedOutput()
		if err == nil {
			return nil
		}
		log, _ := os.ReadFile(logFile)
		if attempt < 3 && strings.Contains(string(log), "could not create any TCP/IP sockets") {
			continue
		}
		return fmt.Errorf("pg_ctl start as %s: %v\n%s\npostgres.log:\n%s", as.name, err, out, tail(log, 4000))
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// connect opens the admin pool over the cluster's socket, then checks that
// the TCP port reaches the same cluster before any URL naming it is handed
// out.
func (c *cluster) connect() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := c.socketConfig("postgres")
	if err != nil {
		return fmt.Errorf("admin connection: %w", err)
	}
	poolCfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return fmt.Errorf("admin connection: %w", err)
	}
	poolCfg.ConnConfig = cfg
	poolCfg.MaxConns = 8
	if c.admin, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return fmt.Errorf("admin connection: %w", err)
	}
	const sysID = `SELECT system_identifier::text FROM pg_control_system()`
	var want, got string
	if err := c.admin.QueryRow(ctx, sysID).Scan(&want); err != nil {
		return fmt.Errorf("admin connection over %s: %w", c.sockDir, err)
	}
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		return fmt.Errorf("connect over TCP port %d: %w", c.port, err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sysID).Scan(&got); err != nil {
		return fmt.Errorf("connect over TCP port %d: %w", c.port, err)
	}
	if got != want {
		return fmt.Errorf("TCP port %d answers for another cluster (system identifier %s, ours %s)", c.port, got, want)
	}
	return nil
}

// makeTemplate creates and migrates the template database, then closes it to
// connections.
func (c *cluster) makeTemplate() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.admin.Exec(ctx, "CREATE DATABASE "+TemplateDatabase); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	cfg, err := c.socketConfig(TemplateDatabase)
	if err != nil {
		return fmt.Errorf("migrate template database: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	err = migrations.Up(ctx, db, nil)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("migrate template database: %w", err)
	}
	if _, err := c.admin.Exec(ctx, "ALTER DATABASE "+TemplateDatabase+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("seal template database: %w", err)
	}
	return nil
}

// stop stops the cluster and removes its directory, through the watchdog
// when there is one.
func (c *cluster) stop() error {
	if c.admin != nil {
		c.admin.Close()
	}
	if c.watchdog != nil {
		c.watchdogIn.Close()
		waited := make(chan error, 1)
		go func() { waited <- c.watchdog.Wait() }()
		select {
		case <-waited:
		case <-time.After(time.Minute):
			return fmt.Errorf("cluster in %s did not stop within a minute", c.dir)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove cluster directory: %w", err)
	}
	return nil
}
