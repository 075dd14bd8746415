package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
)

// parseDuration reads a positive duration: a Go duration ("90m", "4h30m")
// or a whole number of days ("7d"), which grants and requests are often
// counted in. Spaces around it are ignored.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := fieldpass.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be positive", s)
	}
	// A slip of a finger asks for years, so durations are capped, in
	// days or hours alike (the broker caps grants lower still).
	if d > maxDays*24*time.Hour {
		return 0, fmt.Errorf("duration %s is longer than %dd, the most this command takes", s, maxDays)
	}
	return d, nil
}

// maxDays is the longest duration the CLI takes in days.
const maxDays = 1000

// parseUntil reads the end of a grant: an RFC 3339 time, which must be
// after now.
func parseUntil(s string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q: want RFC 3339, e.g. %s", s, now.Add(4*time.Hour).UTC().Truncate(time.Hour).Format(time.RFC3339))
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--until %s is in the past", t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// parseSince reads the start of a query window: an RFC 3339 time, or a
// duration ago ("24h", "7d").
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q: want RFC 3339 (2030-01-02T15:04:05Z) or a duration ago (24h, 7d)", s)
	}
	return now.Add(-d), nil
}

// formatDuration renders d compactly for tables: "4h", "1h30m", "7d".
func formatDuration(d time.Duration) string { return fieldpass.FormatDuration(d) }
