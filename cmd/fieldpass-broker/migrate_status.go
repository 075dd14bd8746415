package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fieldpass/fieldpass/migrations"
)

// migrateStatus prints which migrations of this binary the database has
// applied and which are pending: before an upgrade, what migrate will do;
// after a downgrade, that the schema is newer than this binary.
func (e env) migrateStatus(ctx context.Context, args []string) error {
	fs := e.flagSet("migrate status", "migrate status [--database-url URL] [--json]\n\n"+
		"Lists this release's migrations, applied (when) or pending, and says what to run.\n"+
		"It only reads: the broker's role may run it as well as the owner.")
	dbURL := fs.String("database-url", "", "Postgres URL (default $FIELDPASS_MIGRATE_DATABASE_URL, else $FIELDPASS_DATABASE_URL)")
	asJSON := fs.Bool("json", false, "print JSON: {\"database_version\": N, \"migrations\": [{\"version\", \"file\", \"applied\", \"applied_at\"}]}")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *dbURL == "" {
		*dbURL = e.getenv("FIELDPASS_MIGRATE_DATABASE_URL")
	}
	url, err := e.databaseURL(*dbURL)
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return usageError{Msg: fmt.Sprintf("--database-url: %v", err)}
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, dbVersion, err := migrations.Statuses(ctx, db)
	if err != nil {
		return fmt.Errorf("%w (is the database at %s reachable?)", err, cfg.Host)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			DatabaseVersion int64               `json:"database_version"`
			Migrations      []migrations.Status `json:"migrations"`
		}{dbVersion, st})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tFILE\tSTATE\tAPPLIED AT")
	pending, latest := 0, int64(0)
	for _, s := range st {
		state, at := "pending", "-"
		if s.Applied {
			state, at = "applied", s.AppliedAt.Format("2006-01-02 15:04:05 UTC")
		} else {
			pending++
		}
		latest = max(latest, s.Version)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, s.File, state, at)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case dbVersion > latest:
		fmt.Fprintf(e.stdout, "The database is at version %d, newer than this release's %d: a newer release migrated it. "+
			"Run that release (migrations are never undone), or restore a backup taken before the upgrade.\n", dbVersion, latest)
	case pending > 0:
		fmt.Fprintf(e.stdout, "%d applied, %d pending: run \"fieldpass-broker migrate\" as the schema's owner to apply them.\n", len(st)-pending, pending)
	default:
		fmt.Fprintf(e.stdout, "All %d applied: the database is up to date.\n", len(st))
	}
	return nil
}
