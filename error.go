package fieldpass

import (
	"errors"
	"fmt"
	"strings"
)

// Error codes: a small, closed vocabulary. The edges (HTTP API, CLI) map each
// to one status or exit code in a single table.
const (
	ECONFLICT    = "conflict"    // the action conflicts with current state
	EFORBIDDEN   = "forbidden"   // the caller may not do this
	EINTERNAL    = "internal"    // a bug or an unexpected failure
	EINVALID     = "invalid"     // bad input; nothing was changed
	ENOTFOUND    = "not_found"   // the thing does not exist (or is hidden)
	EUNAVAILABLE = "unavailable" // a dependency is down; try again later
	EEXPIRED     = "expired"     // a token or window has passed its end
)

// Error is an error a person can act on: a code from the vocabulary above and
// a message safe to show to the caller.
type Error struct {
	Code    string
	Message string
	// cause is what a %w in Errorf's format named: kept for errors.Is and
	// errors.As, never shown (Message already says what a person needs).
	cause error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and formatted message. As
// with fmt.Errorf, a %w verb keeps its operand as the cause, so a caller can
// still ask errors.Is(err, context.Canceled) of an error a person reads.
func Errorf(code, format string, args ...any) *Error {
	w := fmt.Errorf(format, args...)
	e := &Error{Code: code, Message: w.Error()}
	if strings.Contains(format, "%w") {
		e.cause = w
	}
	return e
}

// Unwrap returns the cause named with %w, if any.
func (e *Error) Unwrap() error {
	if e.cause == nil {
		return nil
	}
	return errors.Unwrap(e.cause)
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the human message of the first *Error in err's chain,
// or a generic one for internal errors so that internals never leak.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
