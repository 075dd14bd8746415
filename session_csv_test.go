package fieldpass_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

func TestWriteSessionsCSV(t *testing.T) {
	at := time.Date(2030, 6, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	var b bytes.Buffer
	err := fieldpass.WriteSessionsCSV(&b, []*fieldpass.Session{
		{ID: "s1", User: "a@example.com", Device: "pump-7", Service: "ssh", GrantID: "g1", ClientAddr: "=HYPERLINK(\"x\")",
			BrokerID: "b1", Start: at, End: at.Add(time.Minute), BytesIn: 1, BytesOut: 2, EndReason: fieldpass.EndClientClosed},
		{ID: "s2", User: "v@example.com", Device: "gw-1", Service: "web", Start: at},
	})
	want := "id,user,device,service,grant_id,client_address,start,end,bytes_in,bytes_out,end_reason,broker_id\n" +
		"s1,a@example.com,pump-7,ssh,g1,\"'=HYPERLINK(\"\"x\"\")\",2030-06-01T09:00:00Z,2030-06-01T09:01:00Z,1,2,client_closed,b1\n" +
		"s2,v@example.com,gw-1,web,,,2030-06-01T09:00:00Z,,0,0,,\n"
	if err != nil || b.String() != want {
		t.Errorf("got %v:\n%s\nwant:\n%s", err, b.String(), want)
	}
}
