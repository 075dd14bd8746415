package access_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The four-eyes rule is one rule: nobody gives themselves access, by a
// grant or by approving their own request; with FourEyesAll no grant is
// made directly at all.
func TestFourEyes(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	admin, err := db.EnsureUser(ctx, "operator:test", "admin@example.com", []fieldpass.Role{fieldpass.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	c := &fieldpass.Caller{User: admin}
	grant := func(subject string) fieldpass.Grant {
		return fieldpass.Grant{Subject: subject, Start: time.Now(), Devices: []string{"pump-7"}, Services: []string{"ssh"},
			End: time.Now().Add(time.Hour), Reason: "test"}
	}

	rules := access.New(access.Config{DB: db})
	_, err = rules.CreateGrant(ctx, c, grant("Admin@Example.com"))
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "cannot grant yourself") ||
		!strings.Contains(err.Error(), "request create") {
		t.Fatalf("self-grant: got %v, want forbidden saying what to do instead", err)
	}
	if _, err := rules.CreateGrant(ctx, c, grant("eng@example.com")); err != nil {
		t.Fatalf("grant to another person: %v", err)
	}

	strict := access.New(access.Config{DB: db, FourEyes: access.FourEyesAll})
	_, err = strict.CreateGrant(ctx, c, grant("eng@example.com"))
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "second person") {
		t.Fatalf("direct grant under FourEyesAll: got %v, want forbidden", err)
	}
	if _, err := access.ParseFourEyes("none"); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("ParseFourEyes(none): %v", err)
	}
}
