package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestOpenSessionsInGroups: opens that arrive together share one
// transaction, and each gets exactly the answer it would get alone: the
// ones that hold are committed with their session.start events in one
// unbroken chain, the others are refused for their own reason.
func TestOpenSessionsInGroups(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	other := s.mustGrant(t, fieldpass.Grant{Subject: "someone@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})

	// The first group holds until every other open is queued behind it,
	// so that a second group has them all.
	const n = 40
	var sizes []int
	var sizesMu sync.Mutex
	s.OnOpenGroup(func(k int) {
		sizesMu.Lock()
		first := len(sizes) == 0
		sizes = append(sizes, k)
		sizesMu.Unlock()
		if first {
			waitQueued(s, n-k)
		}
	})

	type want struct{ code, msg string } // code "": opened
	cases := make([]fieldpass.Session, n)
	wants := make([]want, n)
	for i := range n {
		in := fieldpass.Session{User: "eng@example.com", Device: "pump-1", Service: "ssh", GrantID: g.ID,
			ClientAddr: fmt.Sprintf("198.51.100.4:%d", 40000+i), BrokerID: "broker-1"}
		switch i % 5 {
		case 1:
			in.Service, wants[i] = "web", want{fieldpass.EFORBIDDEN, "does not give"}
		case 2:
			in.GrantID, wants[i] = other.ID, want{fieldpass.EFORBIDDEN, "does not give"}
		case 3:
			in.Device, wants[i] = "nope", want{fieldpass.ENOTFOUND, "device"}
		}
		cases[i] = in
	}
	outs := make([]*fieldpass.Session, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = s.OpenSession(ctx, cases[i])
		}()
	}
	wg.Wait()

	opened := 0
	for i := range n {
		if wants[i].code != "" {
			wantError(t, errs[i], wants[i].code, wants[i].msg)
			continue
		}
		if errs[i] != nil {
			t.Errorf("open %d: %v", i, errs[i])
			continue
		}
		opened++
		if outs[i].ClientAddr != cases[i].ClientAddr || outs[i].GrantID != g.ID || !outs[i].Open() {
			t.Errorf("open %d: got %+v", i, outs[i])
		}
		if c := s.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND client_addr = $2`, outs[i].ID, cases[i].ClientAddr); c != 1 {
			t.Errorf("open %d: %d committed rows, want 1", i, c)
		}
		if c := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.start' AND target = $1`, "session:"+outs[i].ID); c != 1 {
			t.Errorf("open %d: %d session.start events, want 1", i, c)
		}
	}
	if opened != 2*n/5 {
		t.Errorf("%d opened, want %d", opened, 2*n/5)
	}
	if c := s.count(t, `SELECT count(*) FROM sessions`); c != opened {
		t.Errorf("%d session rows, want %d", c, opened)
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
	sizesMu.Lock()
	defer sizesMu.Unlock()
	total, largest := 0, 0
	for _, k := range sizes {
		total, largest = total+k, max(largest, k)
	}
	if total != n || len(sizes) > 2 || largest < n/2 {
		t.Errorf("group sizes %v: want all %d opens in at most two groups", sizes, n)
	}
}

// TestOpenSessionsInGroupsOneFails: when one open of a group fails at its
// insert, the group is rolled back and its opens are tried alone: only the
// one fails.
func TestOpenSessionsInGroupsOneFails(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	const bad = "198.51.100.66:1"
	if _, err := s.sql.Exec(ctx, `
		CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.client_addr = '`+bad+`' THEN RAISE EXCEPTION 'refused for the test'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_one BEFORE INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_one()`); err != nil {
		t.Fatal(err)
	}
	// The bad open is queued only once a first group has formed, so it
	// lands in the second, with others.
	const n = 6
	var (
		first  sync.Once
		formed = make(chan struct{})
		sizes  []int
	)
	s.OnOpenGroup(func(k int) {
		sizes = append(sizes, k) // groups run one at a time
		first.Do(func() { close(formed); waitQueued(s, n-k) })
	})
	errs := make([]error, n)
	var wg sync.WaitGroup
	open := func(i int, client string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.OpenSession(ctx, fieldpass.Session{User: "eng@example.com", Device: "pump-1", Service: "ssh",
				GrantID: g.ID, ClientAddr: client, BrokerID: "broker-1"})
		}()
	}
	for i := range n - 1 {
		open(i, fmt.Sprintf("198.51.100.4:%d", 40000+i))
	}
	<-formed
	open(n-1, bad)
	wg.Wait()
	if len(sizes) < 2 || sizes[1] < 2 {
		t.Fatalf("group sizes %v: the refused open's group had no other", sizes)
	}
	for i, err := range errs {
		if i == n-1 {
			if err == nil {
				t.Errorf("the refused open was opened")
			}
			continue
		}
		if err != nil {
			t.Errorf("open %d: %v", i, err)
		}
	}
	if c := s.count(t, `SELECT count(*) FROM sessions`); c != n-1 {
		t.Errorf("%d session rows, want %d", c, n-1)
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// waitQueued waits up to 10 s for k session opens to be queued.
func waitQueued(s *store, k int) {
	for deadline := time.Now().Add(10 * time.Second); s.QueuedOpens() < k && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}
