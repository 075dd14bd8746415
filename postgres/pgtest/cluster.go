package pgtest

import "testing"

// NewCluster starts a cluster of tb's own, apart from the one NewDatabase
// uses, and returns the URL of its "postgres" database as the superuser.
// It holds no role but the superuser: what a restore into a fresh server
// meets (a backup test). It is stopped and removed when tb ends.
func NewCluster(tb testing.TB) string {
	tb.Helper()
	c, err := startCluster()
	if err != nil {
		tb.Fatalf("pgtest: second cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return c.url("postgres")
}
