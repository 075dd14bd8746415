package cliexit

import (
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/fieldpass/fieldpass"
)

func TestCodeAndMessage(t *testing.T) {
	api := fieldpass.Errorf(fieldpass.EFORBIDDEN, "no grant for pump-7/ssh")
	for _, tt := range []struct {
		err  error
		code int
		msg  string
	}{
		{fmt.Errorf("parse: %w", flag.ErrHelp), 0, "parse: flag: help requested"},
		{UsageError{Msg: "--limit: want a number"}, 2, "--limit: want a number"},
		{fmt.Errorf("wrapped: %w", UsageError{Msg: "bad"}), 2, "wrapped: bad"},
		{fmt.Errorf("connect: %w", api), 1, "no grant for pump-7/ssh"},
		{errors.New("disk full"), 1, "disk full"},
	} {
		if got := Code(tt.err); got != tt.code {
			t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.code)
		}
		if got := Message(tt.err); got != tt.msg {
			t.Errorf("Message(%v) = %q, want %q", tt.err, got, tt.msg)
		}
	}
	if Code(nil) != 0 {
		t.Error("Code(nil) != 0")
	}
}
