package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// RecordWebRequests appends reqs to their sessions' request logs in one
// round trip. Paths longer than fieldpass.MaxWebPath are cut.
func (db *DB) RecordWebRequests(ctx context.Context, reqs []fieldpass.WebRequest) error {
	if len(reqs) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(reqs))
	for _, r := range reqs {
		if !uuidRE.MatchString(r.SessionID) {
			return fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", r.SessionID)
		}
		path := r.Path
		if len(path) > fieldpass.MaxWebPath {
			path = path[:fieldpass.MaxWebPath-len("…")]
			for !utf8.ValidString(path) {
				path = path[:len(path)-1]
			}
			path += "…"
		}
		method := r.Method
		if method == "" || len(method) > 16 {
			method = "?"
		}
		rows = append(rows, []any{r.SessionID, r.At, method, strings.ToValidUTF8(path, "?"), r.Status, r.BytesIn, r.BytesOut, r.Duration.Milliseconds(), r.Upgrade})
	}
	_, err := db.pool.CopyFrom(ctx, pgx.Identifier{"web_requests"},
		[]string{"session_id", "at", "method", "path", "status", "bytes_in", "bytes_out", "duration_ms", "upgrade"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("record web requests: %w", err)
	}
	return nil
}

// WebRequests returns the request log of one session, oldest first, at
// most limit rows (default and maximum 5000).
func (db *DB) WebRequests(ctx context.Context, sessionID string, limit int) ([]fieldpass.WebRequest, error) {
	if !uuidRE.MatchString(sessionID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", sessionID)
	}
	limit, err := pageLimit(limit, 5000)
	if err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `SELECT session_id::text, at, method, path, status, bytes_in, bytes_out, duration_ms, upgrade
		FROM web_requests WHERE session_id = $1::uuid ORDER BY at, id LIMIT $2`, sessionID, limit)
	return collectRows(rows, err, "list web requests", func(row pgx.Row) (fieldpass.WebRequest, error) {
		var r fieldpass.WebRequest
		var ms int64
		err := row.Scan(&r.SessionID, &r.At, &r.Method, &r.Path, &r.Status, &r.BytesIn, &r.BytesOut, &ms, &r.Upgrade)
		r.At = r.At.UTC()
		r.Duration = time.Duration(ms) * time.Millisecond
		return r, err
	})
}
