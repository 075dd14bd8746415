package apiserver

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fieldpass/fieldpass"
)

// Paging of the list endpoints: ?limit=1..maxPage, defaultPage if absent.
const (
	defaultPage = 100
	maxPage     = 1000
)

// maxParamLen bounds any one query parameter (an audit actor or target is
// at most 1024 bytes; nothing else is longer).
const maxParamLen = 1024

// queryParams reads the query parameters of a list endpoint, keeping the
// first error: parse every parameter, then check err once. Parameters the
// endpoint does not know are ignored; a repeated one counts once (the
// first).
type queryParams struct {
	v   url.Values
	err error
}

func newQuery(r *http.Request) *queryParams { return &queryParams{v: r.URL.Query()} }

func (q *queryParams) fail(err error) {
	if q.err == nil {
		q.err = err
	}
}

// text returns a printable parameter of at most max bytes.
func (q *queryParams) text(name string, max int) string {
	s := q.v.Get(name)
	if len(s) > max {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s: longer than %d bytes", name, max))
		return ""
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s: has a control character", name))
			return ""
		}
	}
	return s
}

// email returns a normalised email address, or "" if absent.
func (q *queryParams) email(name string) string {
	s := q.v.Get(name)
	if s == "" {
		return ""
	}
	e, err := fieldpass.NormalizeEmail(s)
	if err != nil {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s: %s", name, fieldpass.ErrorMessage(err)))
		return ""
	}
	return e
}

// device returns a device name, or "" if absent.
func (q *queryParams) device(name string) string {
	s := q.v.Get(name)
	if s == "" {
		return ""
	}
	if err := fieldpass.ValidateDeviceName(s); err != nil {
		q.fail(err)
		return ""
	}
	return s
}

// boolean returns a true/false parameter; absent is false.
func (q *queryParams) boolean(name string) bool {
	s := q.v.Get(name)
	if s == "" {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s %q: want true or false", name, truncate(s)))
	}
	return b
}

// time returns an RFC 3339 time; absent is the zero time.
func (q *queryParams) time(name string) time.Time {
	s := q.v.Get(name)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s %q: want an RFC 3339 time such as 2030-01-02T15:04:05Z", name, truncate(s)))
		return time.Time{}
	}
	return t.UTC()
}

// limit returns ?limit=, 1 to maxPage, defaultPage if absent.
func (q *queryParams) limit() int {
	s := q.v.Get("limit")
	if s == "" {
		return defaultPage
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPage {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid limit %q: want a number from 1 to %d", truncate(s), maxPage))
		return defaultPage
	}
	return n
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
