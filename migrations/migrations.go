// Package migrations holds the Fieldpass schema as numbered goose SQL files,
// embedded in every binary that needs them, and applies them.
//
// Files are named NNNNN_what.sql and are never edited once released: a change
// to the schema is a new file. Each file runs in its own transaction, so a
// failed migration leaves the database at the previous version.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// Up applies every migration in FS that db has not seen yet and logs each one
// it applies. It is safe to run from several brokers at once: a Postgres
// advisory lock makes them take turns, and the later ones find nothing to do.
// A nil logger discards the log.
func Up(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// The provider is built per call and holds no state beyond it; the global
	// goose registry (Go migrations registered from init) is ignored so that
	// only the files in FS ever run.
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger),
	)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// p.Close would close db, which belongs to the caller.
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			logger.InfoContext(ctx, "migration applied", "file", r.Source.Path, "version", r.Source.Version, "duration", r.Duration)
		}
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
