// Package cliexit is how the Fieldpass commands end: the message a person
// reads after the program's name, and the exit status. It imports only the
// standard library and the root package, so that the CLI and the connector
// can use it without the broker's dependencies.
package cliexit

import (
	"errors"
	"flag"

	"github.com/fieldpass/fieldpass"
)

// UsageError is bad command-line input: exit status 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Message is what a person reads: the server's own message for an API or
// domain error, the error's text otherwise.
func Message(err error) string {
	var fe *fieldpass.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

// Code is the exit status for err: 0 for none or for -h (help was asked for
// and given), 2 for a UsageError, 1 for any other.
func Code(err error) int {
	var ue UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}
