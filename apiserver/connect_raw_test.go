package apiserver_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/tunnel"
)

// TestConnectRawUpgrade speaks the raw transport by hand: 101 Switching
// Protocols naming httpapi.ConnectUpgrade, then yamux straight on the
// connection, each stream answered with a status first.
func TestConnectRawUpgrade(t *testing.T) {
	e := newConnectEnv(t)
	e.grant(t, "pump-1", time.Time{}, "echo")
	u, _ := url.Parse(e.srv.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + httpapi.ConnectPath + "?device=pump-1&service=echo HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAuthorization: Bearer " + e.token + "\r\nConnection: Upgrade\r\nUpgrade: " + httpapi.ConnectUpgrade + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != httpapi.ConnectUpgrade {
		t.Fatalf("answer %s, Upgrade %q: want 101 and %s", resp.Status, resp.Header.Get("Upgrade"), httpapi.ConnectUpgrade)
	}
	ys, err := yamux.Client(struct {
		io.Reader
		io.WriteCloser
	}{br, c}, tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	st, err := ys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// The request goes out before the answer: the broker holds it until
	// the device's service is reached.
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	status, err := tunnel.ReadStreamStatus(st)
	if err != nil || status.Code != tunnel.StatusOK {
		t.Fatalf("status %+v, %v: want ok", status, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo %q, %v", got, err)
	}
	st.Close()
	ys.Close()
	if r := e.waitEnded(t); r.EndReason != fieldpass.EndClientClosed || r.BytesIn != 5 || r.BytesOut != 5 {
		t.Errorf("row: %s in %d out %d; want client_closed, 5 each way", r.EndReason, r.BytesIn, r.BytesOut)
	}
}

// wrappedTransport is an HTTP client transport the connect client cannot
// keep to HTTP/1.1 for the raw upgrade, as a proxying or instrumented one
// may be: the client must fall back to the WebSocket, which browsers and
// older CLIs use.
type wrappedTransport struct{ rt http.RoundTripper }

func (w wrappedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return w.rt.RoundTrip(r)
}

// TestConnectWebSocketStillServed: the WebSocket leg carries a session and
// its end reason as before.
func TestConnectWebSocketStillServed(t *testing.T) {
	e := newConnectEnv(t)
	g := e.grant(t, "pump-1", time.Time{}, "echo")
	cl := e.client()
	cl.HTTP = &http.Client{Transport: wrappedTransport{http.DefaultTransport}}
	conn, err := cl.Connect(context.Background(), "pump-1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoThrough(t, conn, 256<<10)
	if _, err := e.db.RevokeGrant(context.Background(), connectOperator, g.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("session still open 3s after the revocation")
	}
	if conn.Reason() != string(fieldpass.EndGrantRevoked) {
		t.Errorf("reason %q, want %s", conn.Reason(), fieldpass.EndGrantRevoked)
	}
}

// TestConnectEarlyStream: a stream opened without waiting for the answer
// carries bytes written at once, and reports a refusal on its first Read.
func TestConnectEarlyStream(t *testing.T) {
	e := newConnectEnv(t)
	e.grant(t, "pump-1", time.Time{}, "echo", "ssh")
	for _, service := range []string{"echo", "ssh"} {
		t.Run(service, func(t *testing.T) {
			conn, err := e.client().Connect(context.Background(), "pump-1", service)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			st, err := conn.OpenStreamEarly()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("early")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			_, err = io.ReadFull(st, got)
			switch service {
			case "echo":
				if err != nil || string(got) != "early" || st.Status() != nil {
					t.Fatalf("echo %q, %v (status %v)", got, err, st.Status())
				}
			case "ssh": // not exposed by pump-1
				if fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND || !strings.Contains(err.Error(), "ssh") || st.Status() != err {
					t.Fatalf("read on a refused stream: %v (status %v), want not_found naming ssh", err, st.Status())
				}
			}
			st.Close()
		})
	}
}
