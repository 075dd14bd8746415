// Package postgres is the Fieldpass store on Postgres, through pgx: devices,
// enrolment tokens, presence and history; users, tokens, grants, access
// requests and sessions; the audit chain and its checkpoints; alert dead
// letters and their replays; the database roles (role.go); and the
// notifications that keep running brokers in step with the devices, grants
// and users tables. It speaks the types of package fieldpass.
//
// Methods return a *fieldpass.Error (invalid, not_found, conflict, expired)
// where a person can act on the failure, and wrap everything else with short
// context. Input is validated before anything is written; a failed call
// changes nothing.
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/migrations"
)

// DB is a pool of connections to one Fieldpass database. Set its fields, if
// at all, before first use.
type DB struct {
	pool *pgxpool.Pool

	// Now is the clock used for token expiry and every timestamp the store
	// writes. Default time.Now; tests move it to expire tokens without sleeping.
	Now func() time.Time

	// Rand is the source of enrolment token secrets. Default crypto/rand.
	Rand io.Reader

	// Logger receives migration progress and listener reconnects. Default:
	// discard. Tokens, keys and passwords are never logged.
	Logger *slog.Logger

	opens grouper[*openCheck] // session opens waiting for their group (group.go, session_open.go)
	ends  grouper[*endReq]    // session ends waiting for theirs
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string) and checks that it answers. Errors name the host and
// never include the password.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("invalid database URL: %s", redactPassword(err.Error(), url))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// Without a bound, a connection attempt into a network partition
		// waits for the kernel's SYN retries (minutes), and every request
		// needing a new connection hangs with it instead of failing as
		// unavailable. connect_timeout in the URL overrides this.
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %s", serverName(cfg.ConnConfig.Config), redactPassword(err.Error(), url))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s: %s", serverName(cfg.ConnConfig.Config), redactPassword(err.Error(), url))
	}
	return &DB{
		pool:   pool,
		Now:    time.Now,
		Rand:   rand.Reader,
		Logger: slog.New(slog.DiscardHandler),
	}, nil
}

// DefaultConnectTimeout bounds a new connection to Postgres unless the URL
// sets connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// Unavailable reports whether err says Postgres (or the way to it) did not
// answer or the connection broke, as opposed to a query it refused or a bug:
// a reason to answer "try again later".
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &pe):
		// Connection exceptions, operator intervention (shutdown,
		// terminated backends), insufficient resources.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "53")
	}
	// pgx reports a connection killed mid-query in several shapes.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "closed pool")
}

// Close closes every connection in the pool. Listeners started with
// ListenDevices hold their own connection and end with their context.
func (db *DB) Close() {
	db.pool.Close()
}

// Ping checks that the database answers, over a pooled connection.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Migrate brings the schema up to date (see package migrations).
func (db *DB) Migrate(ctx context.Context) error {
	sqlDB := stdlib.OpenDBFromPool(db.pool)
	defer sqlDB.Close() // does not close the pool
	return migrations.Up(ctx, sqlDB, db.logger())
}

// now returns the store's clock reading at Postgres' precision
// (microseconds), so that a time handed back equals the one stored.
func (db *DB) now() time.Time {
	now := time.Now
	if db.Now != nil {
		now = db.Now
	}
	return now().UTC().Truncate(time.Microsecond)
}

func (db *DB) rand() io.Reader {
	if db.Rand == nil {
		return rand.Reader
	}
	return db.Rand
}

func (db *DB) logger() *slog.Logger {
	if db.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return db.Logger
}

// serverName names the server of cfg for error messages: host:port, or the
// socket directory.
func serverName(cfg pgconn.Config) string {
	if strings.HasPrefix(cfg.Host, "/") {
		return fmt.Sprintf("%s (port %d)", cfg.Host, cfg.Port)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

var passwordParamRE = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|[^\s&]+)`)

// redactPassword removes the password of connString from msg. pgx redacts
// its own messages on a best-effort basis; this makes sure of it for the
// password we were given, whatever form the connection string took.
func redactPassword(msg, connString string) string {
	var passwords []string
	if u, err := url.Parse(connString); err == nil {
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				passwords = append(passwords, pw, url.QueryEscape(pw), url.PathEscape(pw))
			}
		}
		passwords = append(passwords, u.Query().Get("password"))
	}
	for _, m := range passwordParamRE.FindAllStringSubmatch(connString, -1) {
		passwords = append(passwords, m[2], strings.Trim(m[2], "'"))
	}
	for _, pw := range passwords {
		if pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return passwordParamRE.ReplaceAllString(msg, "${1}xxxxx")
}

// Constraint names from the migrations, mapped to conflicts by the callers.
const (
	constraintLiveName   = "devices_live_name"
	constraintPublicKey  = "devices_public_key_unique"
	constraintTunnelAddr = "devices_tunnel_addr_unique"
)

// uniqueViolation returns the name of the unique constraint err violated, or
// "" if err is not a unique violation.
func uniqueViolation(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return pgErr.ConstraintName
	}
	return ""
}

// collectRows scans every row of a Query result with scan; what is the
// context for errors ("list users"). Pass Query's two results straight in.
func collectRows[T any](rows pgx.Rows, err error, what string, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// pageLimit checks a filter's Limit and applies the default and maximum max.
func pageLimit(limit, max int) (int, error) {
	if limit < 0 {
		return 0, fieldpass.Errorf(fieldpass.EINVALID, "invalid limit %d", limit)
	}
	if limit == 0 || limit > max {
		return max, nil
	}
	return limit, nil
}

// filter builds the WHERE clause and arguments of a listing query.
type filter struct {
	conds []string
	args  []any
}

// add adds cond, in which every $? stands for v.
func (f *filter) add(cond string, v any) {
	f.args = append(f.args, v)
	f.conds = append(f.conds, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(f.args))))
}

// where returns the conditions joined by AND ("true" if none).
func (f *filter) where() string {
	if len(f.conds) == 0 {
		return "true"
	}
	return strings.Join(f.conds, " AND ")
}

// limit adds n as the last argument and returns the LIMIT clause for it.
func (f *filter) limit(n int) string {
	f.args = append(f.args, n)
	return fmt.Sprintf(" LIMIT $%d", len(f.args))
}

// Explain turns an error that says Postgres is unreachable into the one a
// person reads ("the broker's database is unavailable ..."): an outage, not
// a bug, and worth retrying. Other errors come back as they are.
func Explain(err error) error {
	if fieldpass.ErrorCode(err) != fieldpass.EINTERNAL || !Unavailable(err) {
		return err
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the broker's database is unavailable: no new sessions or changes until it is back; try again shortly")
}
