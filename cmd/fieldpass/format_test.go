package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

var (
	t0 = time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)
	t1 = time.Date(2030, 6, 1, 10, 30, 0, 0, time.FixedZone("CEST", 2*3600))
)

func testSessions() []*fieldpass.Session {
	return []*fieldpass.Session{
		{ID: "s2", User: "vendor@acme.example", Device: "pump-7", Service: "ssh", GrantID: "g1", ClientAddr: "192.0.2.1:5000", Start: t0},
		{ID: "s1", User: "alice@example.com", Device: "gw-1", Service: "web", GrantID: "g2", ClientAddr: "198.51.100.7:41000",
			Start: t0, End: t1, BytesIn: 1234, BytesOut: 567890, EndReason: fieldpass.EndGrantExpired, DeviceReconnects: 1, StreamsCut: 2},
	}
}

func testAudit() []fieldpass.AuditEvent {
	return []fieldpass.AuditEvent{
		{Seq: 1, At: t0, Actor: "user:admin@example.com", Action: "grant.create", Target: "grant:g1",
			Details: map[string]any{"subject": "vendor@acme.example", "reason": `fix "pump", now`}, PrevHash: make([]byte, 32), Hash: bytes.Repeat([]byte{0xab}, 32)},
		{Seq: 2, At: t1, Actor: "broker:b1", Action: "session.end", Target: "session:s1", Hash: bytes.Repeat([]byte{0x01}, 32)},
	}
}

func TestWriteDevices(t *testing.T) {
	devs := []httpapi.DeviceView{
		{Name: "pump-7", State: "active", Online: true, Services: []string{"ssh", "web"}, GrantEnds: testNow.Add(3*time.Hour + 59*time.Minute + 30*time.Second)},
		{Name: "gw-1", State: "disabled"},
	}
	var b bytes.Buffer
	if err := writeDevices(&b, devs, testNow); err != nil {
		t.Fatal(err)
	}
	want := `NAME    ONLINE          GRANT-ENDS                           SERVICES
pump-7  yes             2030-06-01T15:59:30Z (4h left)  ssh,web
gw-1    no (disabled)   -                                    -
`
	if got := b.String(); !tableEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// tableEqual compares tables by their cells, not their padding.
func tableEqual(got, want string) bool {
	g, w := strings.Split(strings.TrimSpace(got), "\n"), strings.Split(strings.TrimSpace(want), "\n")
	if len(g) != len(w) {
		return false
	}
	for i := range g {
		if strings.Join(strings.Fields(g[i]), " ") != strings.Join(strings.Fields(w[i]), " ") {
			return false
		}
	}
	return true
}

func TestWriteGrants(t *testing.T) {
	gs := []*fieldpass.Grant{
		{ID: "g1", Subject: "vendor@acme.example", Devices: []string{"pump-7", "pump-8"}, Services: []string{"ssh"}, Start: t0, End: t0.Add(4 * time.Hour), Reason: "firmware", Ticket: "OPS-1"},
		{ID: "g2", Subject: "alice@example.com", Selector: map[string]string{"site": "north", "kind": "pump"}, Services: []string{"ssh", "web"}, Start: t0, End: t0.Add(time.Hour), Reason: "commissioning"},
		{ID: "g3", Subject: "bob@example.com", Devices: []string{"gw-1"}, Services: []string{"ssh"}, Start: t0, End: t0.Add(8 * time.Hour), Reason: "x", RevokedAt: t0.Add(time.Minute)},
		{ID: "g4", Subject: "bob@example.com", Devices: []string{"gw-1"}, Services: []string{"ssh"}, Start: testNow.Add(time.Hour), End: testNow.Add(8 * time.Hour), Reason: "later"},
	}
	var b bytes.Buffer
	if err := writeGrants(&b, gs, t0.Add(90*time.Minute)); err != nil {
		t.Fatal(err)
	}
	want := `ID SUBJECT DEVICES SERVICES START END STATE REASON
g1 vendor@acme.example pump-7,pump-8 ssh 2030-06-01T10:00:00Z 2030-06-01T14:00:00Z active [OPS-1] firmware
g2 alice@example.com kind=pump,site=north ssh,web 2030-06-01T10:00:00Z 2030-06-01T11:00:00Z expired commissioning
g3 bob@example.com gw-1 ssh 2030-06-01T10:00:00Z 2030-06-01T18:00:00Z revoked x
g4 bob@example.com gw-1 ssh 2030-06-01T13:00:00Z 2030-06-01T20:00:00Z scheduled later
`
	if got := b.String(); !tableEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteRequests(t *testing.T) {
	rs := []*fieldpass.AccessRequest{
		{ID: "r1", Requester: "alice@example.com", Device: "pump-7", Service: "ssh", Duration: 2 * time.Hour, Reason: "check logs", CreatedAt: t0, Status: fieldpass.RequestPending},
		{ID: "r2", Requester: "bob@example.com", Device: "gw-1", Service: "web", Duration: 30 * time.Minute, Reason: "config", Ticket: "OPS-9", CreatedAt: t0, Status: fieldpass.RequestApproved, DecidedBy: "carol@example.com", DecidedAt: t1, GrantID: "g9"},
	}
	var b bytes.Buffer
	if err := writeRequests(&b, rs); err != nil {
		t.Fatal(err)
	}
	want := `ID REQUESTER DEVICE SERVICE DURATION CREATED STATUS DECIDED-BY REASON
r1 alice@example.com pump-7 ssh 2h 2030-06-01T10:00:00Z pending - check logs
r2 bob@example.com gw-1 web 30m 2030-06-01T10:00:00Z approved carol@example.com [OPS-9] config
`
	if got := b.String(); !tableEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteSessions(t *testing.T) {
	var b bytes.Buffer
	if err := writeSessions(&b, testSessions()); err != nil {
		t.Fatal(err)
	}
	want := `ID USER DEVICE SERVICE START END BYTES-IN BYTES-OUT RECONNECTS STREAMS-CUT END-REASON
s2 vendor@acme.example pump-7 ssh 2030-06-01T10:00:00Z - 0 0 0 0 (open)
s1 alice@example.com gw-1 web 2030-06-01T10:00:00Z 2030-06-01T08:30:00Z 1234 567890 1 2 grant_expired
`
	if got := b.String(); !tableEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteSessionsCSV(t *testing.T) {
	var b bytes.Buffer
	if err := writeSessionsCSV(&b, testSessions()); err != nil {
		t.Fatal(err)
	}
	want := `id,user,device,service,grant_id,client_address,start,end,bytes_in,bytes_out,end_reason,broker_id
s2,vendor@acme.example,pump-7,ssh,g1,192.0.2.1:5000,2030-06-01T10:00:00Z,,0,0,,
s1,alice@example.com,gw-1,web,g2,198.51.100.7:41000,2030-06-01T10:00:00Z,2030-06-01T08:30:00Z,1234,567890,grant_expired,
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteAuditCSV(t *testing.T) {
	var b bytes.Buffer
	if err := writeAuditCSV(&b, testAudit()); err != nil {
		t.Fatal(err)
	}
	// encoding/csv must quote the details' commas and quotes; read it back.
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"seq", "at", "actor", "action", "target", "details", "hash"},
		{"1", "2030-06-01T10:00:00Z", "user:admin@example.com", "grant.create", "grant:g1", `{"reason":"fix \"pump\", now","subject":"vendor@acme.example"}`, strings.Repeat("ab", 32)},
		{"2", "2030-06-01T08:30:00Z", "broker:b1", "session.end", "session:s1", "{}", strings.Repeat("01", 32)},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %q", len(recs), len(want), recs)
	}
	for i := range want {
		if strings.Join(recs[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("record %d:\n got %q\nwant %q", i, recs[i], want[i])
		}
	}
}

func TestWriteAudit(t *testing.T) {
	var b bytes.Buffer
	if err := writeAudit(&b, testAudit()); err != nil {
		t.Fatal(err)
	}
	want := `SEQ AT ACTOR ACTION TARGET DETAILS
1 2030-06-01T10:00:00Z user:admin@example.com grant.create grant:g1 {"reason":"fix \"pump\", now","subject":"vendor@acme.example"}
2 2030-06-01T08:30:00Z broker:b1 session.end session:s1 {}
`
	if got := b.String(); !tableEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestAuditJSON(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSON(&b, testAudit()); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d events, want 2", len(got))
	}
	e := got[1]
	for k, want := range map[string]any{
		"seq": 2.0, "at": "2030-06-01T08:30:00Z", "actor": "broker:b1", "action": "session.end",
		"target": "session:s1", "hash": strings.Repeat("01", 32), "prev_hash": "",
	} {
		if e[k] != want {
			t.Errorf("%s = %#v, want %#v", k, e[k], want)
		}
	}
	if d, ok := e["details"].(map[string]any); !ok || len(d) != 0 {
		t.Errorf("details = %#v, want {}", e["details"])
	}
}

func TestSessionsJSON(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSON(&b, testSessions()); err != nil {
		t.Fatal(err)
	}
	var got []fieldpass.Session
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].BytesOut != 567890 || !got[1].End.Equal(t1) || got[0].End.IsZero() == false {
		t.Errorf("round trip: %+v", got)
	}
	if strings.Contains(b.String(), `"end": "0001`) {
		t.Errorf("open session has a zero end time in JSON:\n%s", b.String())
	}
}
