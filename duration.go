package fieldpass

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// day is the unit of a "7d" duration: 24 hours, whatever the calendar or
// the clocks do.
const day = 24 * time.Hour

// maxDays is the most whole days a time.Duration holds.
const maxDays = int64(1<<63-1) / int64(day)

// ParseDuration reads a Go duration ("90m", "4h30m", "-2h", "0") or a whole
// number of days ("7d", "+7d", "-7d"): time.ParseDuration's syntax plus a
// "d" suffix on an integer. Fractions of days ("1.5d") and mixtures
// ("1d12h") are refused, since days are meant for round counts. Spaces are
// not trimmed. The sign is the caller's to judge: a grant wants a positive
// duration, a report window may take zero.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 30m, 4h or 7d", s)
		}
		if days > maxDays || days < -maxDays {
			return 0, fmt.Errorf("invalid duration %q: more than %d days", s, maxDays)
		}
		return time.Duration(days) * day, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 30m, 4h or 7d", s)
	}
	return d, nil
}

// FormatDuration writes d as people read it and ParseDuration reads it back:
// whole days as "7d", anything else as Go writes it without its trailing
// zero units ("36h", "4h30m", "90s"). Zero and negative durations are "0s".
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ParsePositiveDuration reads a duration a person typed for what ("4h",
// "90m", "7d"; spaces around it ignored), refusing anything long, unparsable
// or not positive with an invalid error naming what: the API's bodies and
// the portal's forms take durations alike.
func ParsePositiveDuration(what, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if len(s) > 32 {
		return 0, Errorf(EINVALID, "invalid %s: longer than 32 bytes", what)
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, Errorf(EINVALID, "invalid %s %q: want a duration such as 90m, 4h or 7d", what, s)
	}
	if d <= 0 {
		return 0, Errorf(EINVALID, "invalid %s %q: want a positive duration", what, s)
	}
	return d, nil
}
