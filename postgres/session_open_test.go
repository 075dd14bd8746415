package postgres_test

import (
	"fmt"
	"slices"
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
	groups := watchGroups(s.OnOpenGroup, s.QueuedOpens, n)

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
	sizes := groups.sizes()
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
	// The first open makes a group alone, held until the others, the bad
	// one among them, are queued: they make the second group together.
	const n = 6
	groups := watchGroups(s.OnOpenGroup, s.QueuedOpens, n)
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
	open(0, "198.51.100.4:40000")
	<-groups.formed // a group of one, held until the rest are queued behind it
	for i := 1; i < n-1; i++ {
		open(i, fmt.Sprintf("198.51.100.4:%d", 40000+i))
	}
	open(n-1, bad)
	wg.Wait()
	if sizes := groups.sizes(); len(sizes) < 2 || sizes[1] < 2 {
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

// TestEndSessionsInGroups: ends that arrive together share one
// transaction; each session ends once with its session.end event, a second
// end of the same session in the same group gets the first end's record,
// and an unknown session is not found.
func TestEndSessionsInGroups(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	const n = 12
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.mustOpenSession(t, g, "broker-1").ID
	}
	// Ends: one for each session, a second for sessions 0-2 (bytes 999),
	// and one for a session that does not exist.
	type end struct {
		id    string
		bytes int64
	}
	var ends []end
	for i, id := range ids {
		ends = append(ends, end{id, int64(i)})
	}
	for _, id := range ids[:3] {
		ends = append(ends, end{id, 999})
	}
	const unknown = "00000000-0000-4000-8000-000000000000"
	ends = append(ends, end{unknown, 1})

	groups := watchGroups(s.OnEndGroup, s.QueuedEnds, len(ends))
	outs := make([]*fieldpass.Session, len(ends))
	errs := make([]error, len(ends))
	var wg sync.WaitGroup
	for i, e := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = s.EndSession(ctx, e.id, time.Time{}, e.bytes, e.bytes, fieldpass.EndClientClosed)
		}()
	}
	wg.Wait()
	if sizes := groups.sizes(); len(sizes) > 2 || slices.Max(sizes) < len(ends)/2 {
		t.Errorf("group sizes %v: want the %d ends in at most two groups", sizes, len(ends))
	}
	got := map[string]int64{}
	for i, e := range ends {
		if e.id == unknown {
			wantError(t, errs[i], fieldpass.ENOTFOUND, "not found")
			continue
		}
		if errs[i] != nil {
			t.Errorf("end %d of %s: %v", i, e.id, errs[i])
			continue
		}
		if outs[i].Open() || outs[i].EndReason != fieldpass.EndClientClosed {
			t.Errorf("end %d: got %+v", i, outs[i])
		}
		if b, ok := got[e.id]; ok && b != outs[i].BytesIn {
			t.Errorf("session %s: two ends answered with %d and %d bytes: the first end must win for both", e.id, b, outs[i].BytesIn)
		}
		got[e.id] = outs[i].BytesIn
	}
	for i, id := range ids {
		if c := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.end' AND target = $1`, "session:"+id); c != 1 {
			t.Errorf("session %d: %d session.end events, want 1", i, c)
		}
		if c := s.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND ended_at IS NOT NULL AND bytes_in = $2`, id, got[id]); c != 1 {
			t.Errorf("session %d: the row does not hold the answered end (%d bytes)", i, got[id])
		}
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// TestEndSessionsInGroupsOneFails: when one end of a group fails at its
// update's commit, the group is rolled back and its ends tried alone: only
// that one fails, and every other session ends once.
func TestEndSessionsInGroupsOneFails(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	if _, err := s.sql.Exec(ctx, `
		CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.bytes_in = 666 THEN RAISE EXCEPTION 'refused for the test'; END IF;
			RETURN NEW;
		END $$;
		CREATE CONSTRAINT TRIGGER refuse_666 AFTER UPDATE ON sessions DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION refuse_666()`); err != nil {
		t.Fatal(err)
	}
	const n = 6
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.mustOpenSession(t, g, "broker-1").ID
	}
	groups := watchGroups(s.OnEndGroup, s.QueuedEnds, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	end := func(i int, bytes int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.EndSession(ctx, ids[i], time.Time{}, bytes, 0, fieldpass.EndClientClosed)
		}()
	}
	end(0, 1)
	<-groups.formed // a group of one, held until the rest are queued behind it
	for i := 1; i < n-1; i++ {
		end(i, 1)
	}
	end(n-1, 666) // refused at the commit (a deferred trigger)
	wg.Wait()
	if sizes := groups.sizes(); len(sizes) < 2 || sizes[1] < 2 {
		t.Fatalf("group sizes %v: the refused end's group had no other", sizes)
	}
	for i, err := range errs {
		if i == n-1 {
			if err == nil {
				t.Errorf("the refused end was written")
			}
			continue
		}
		if err != nil {
			t.Errorf("end %d: %v", i, err)
		}
	}
	if c := s.count(t, `SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL`); c != n-1 {
		t.Errorf("%d ended sessions, want %d", c, n-1)
	}
	if c := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.end'`); c != n-1 {
		t.Errorf("%d session.end events, want %d", c, n-1)
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// groupWatch follows a store's groups of writes (opens or ends): it holds
// the first group until the writes queued behind it make n in all, so that
// they form a second group together, and records each group's size.
type groupWatch struct {
	mu     sync.Mutex
	all    []int
	formed chan struct{} // closed when the first group has formed
}

func watchGroups(onGroup func(func(int)), queued func() int, n int) *groupWatch {
	w := &groupWatch{formed: make(chan struct{})}
	onGroup(func(k int) {
		w.mu.Lock()
		first := len(w.all) == 0
		w.all = append(w.all, k)
		w.mu.Unlock()
		if !first {
			return
		}
		close(w.formed)
		for deadline := time.Now().Add(10 * time.Second); queued() < n-k && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	})
	return w
}

// sizes returns the groups' sizes so far, in order.
func (w *groupWatch) sizes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.all)
}
