package fieldpass_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// A grant that would end far away is refused in words a person reads: its
// end and the limit in days, not a saturated count of hours.
func TestGrantTooLongMessage(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	g := fieldpass.Grant{Subject: "a@example.com", Devices: []string{"pump-7"}, Services: []string{"ssh"},
		Start: start, End: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), Reason: "forever"}
	err := g.Validate()
	msg := fieldpass.ErrorMessage(err)
	if fieldpass.ErrorCode(err) != fieldpass.EINVALID || !strings.Contains(msg, "9999-12-31T00:00:00Z") || !strings.Contains(msg, "366d") ||
		strings.Contains(msg, "h47m") {
		t.Fatalf("got %v, want invalid naming the end and the 366d limit", err)
	}
}
