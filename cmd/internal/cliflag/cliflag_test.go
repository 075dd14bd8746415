package cliflag_test

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
)

func TestStrings(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var s cliflag.Strings
	fs.Var(&s, "service", "repeatable")
	if err := fs.Parse([]string{"--service", "ssh", "--service=web", "--service", "a,b"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ssh", "web", "a,b"}; !slices.Equal(s, want) {
		t.Errorf("got %q, want %q", s, want)
	}
	if got, want := s.String(), "ssh,web,a,b"; got != want {
		t.Errorf("String: got %q, want %q", got, want)
	}
}
