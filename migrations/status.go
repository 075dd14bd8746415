package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"path"
	"time"

	"github.com/pressly/goose/v3"
)

// Status is one migration of FS and whether the database has it.
type Status struct {
	Version   int64     `json:"version"`
	File      string    `json:"file"`
	Applied   bool      `json:"applied"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// Statuses lists every migration in FS, oldest first, with whether db has
// applied it, and the newest version db has applied (0: none), which is
// above the newest in FS when a newer release migrated db. It only reads:
// a database never migrated has no version table, and all are pending.
func Statuses(ctx context.Context, db *sql.DB) (_ []Status, dbVersion int64, err error) {
	var table sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT to_regclass('goose_db_version')::text").Scan(&table); err != nil {
		return nil, 0, fmt.Errorf("migration status: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, 0, fmt.Errorf("migration status: %w", err)
	}
	if !table.Valid {
		var out []Status
		for _, s := range p.ListSources() {
			out = append(out, Status{Version: s.Version, File: path.Base(s.Path)})
		}
		return out, 0, nil
	}
	// Not p.GetDBVersion: it would create the version table if missing,
	// and the broker's role may only read it.
	if err := db.QueryRowContext(ctx, "SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied").Scan(&dbVersion); err != nil {
		return nil, 0, fmt.Errorf("migration status: %w", err)
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("migration status: %w", err)
	}
	out := make([]Status, len(st))
	for i, s := range st {
		out[i] = Status{Version: s.Source.Version, File: path.Base(s.Source.Path), Applied: s.State == goose.StateApplied}
		if out[i].Applied {
			out[i].AppliedAt = s.AppliedAt.UTC()
		}
	}
	return out, dbVersion, nil
}
