package brokerlink

import (
	"bytes"
	"testing"
)

// FuzzReadFrame: whatever a peer sends, a frame is read whole or refused,
// never over maxFrame, never a panic.
func FuzzReadFrame(f *testing.F) {
	for _, v := range []any{
		request{Op: "open", OpenRequest: OpenRequest{User: "eng@example.com", Device: "pump-1", Service: "ssh"}},
		request{Op: "stream", Session: "0b5e6c3e-8d0a-4c55-9f39-1f6f3c8c2a11"},
		answer{Error: &wireError{Code: "forbidden", Message: "no grant", Deny: "no_grant"}},
		control{Ended: "grant_revoked"},
	} {
		var b bytes.Buffer
		if err := writeFrame(&b, v); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		var req request
		if err := readFrame(bytes.NewReader(in), &req); err != nil {
			return
		}
		// What was read writes back as a frame that reads the same
		// (unless re-encoding grew it past the limit: then it is refused).
		var b bytes.Buffer
		if err := writeFrame(&b, req); err != nil {
			if b.Len() != 0 {
				t.Fatalf("a refused frame wrote %d bytes", b.Len())
			}
			return
		}
		var again request
		if err := readFrame(&b, &again); err != nil || again.Op != req.Op || again.Session != req.Session || again.OpenRequest != req.OpenRequest {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, req)
		}
	})
}
