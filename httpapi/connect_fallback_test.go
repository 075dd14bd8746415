package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/tunnel"
)

// oldBroker answers the connect endpoint as brokers before the raw
// transport did: 400 to anything but a WebSocket, then yamux in binary
// messages, each stream answered ok and echoed.
func oldBroker(t *testing.T, rawAsked *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			if r.Header.Get("Upgrade") == httpapi.ConnectUpgrade {
				rawAsked.Add(1)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(httpapi.ErrorResponse{Code: "invalid", Message: "want a WebSocket upgrade with subprotocol " + httpapi.ConnectSubprotocol})
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{httpapi.ConnectSubprotocol}})
		if err != nil {
			return
		}
		ys, err := yamux.Server(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), tunnel.YamuxConfig(0))
		if err != nil {
			return
		}
		for {
			st, err := ys.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusOK})
				io.Copy(st, st)
				st.Close()
			}()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestConnectFallsBackToWebSocket: against a broker that predates the raw
// transport, or behind a proxy that passes only WebSocket upgrades,
// Connect asks for it, is refused, and carries the session on a WebSocket
// instead.
func TestConnectFallsBackToWebSocket(t *testing.T) {
	t.Run("old broker", func(t *testing.T) { testFallback(t, false) })
	t.Run("proxy", func(t *testing.T) { testFallback(t, true) })
}

func testFallback(t *testing.T, proxy bool) {
	var rawAsked atomic.Int32
	srv := oldBroker(t, &rawAsked)
	url := srv.URL
	if proxy {
		// A proxy of the kind: its own plain-text refusal, 502.
		back, _ := neturl.Parse(srv.URL)
		rp := httputil.NewSingleHostReverseProxy(back)
		p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") == httpapi.ConnectUpgrade {
				rawAsked.Add(1)
				http.Error(w, "bad gateway", http.StatusBadGateway)
				return
			}
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(p.Close)
		url = p.URL
	}
	conn, err := httpapi.NewClient(url, "fpt_"+strings.Repeat("A", 43)).Connect(context.Background(), "pump-1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if rawAsked.Load() != 1 {
		t.Errorf("the raw transport was asked for %d times, want once", rawAsked.Load())
	}
	for _, early := range []bool{false, true} {
		var st io.ReadWriteCloser
		if early {
			st, err = conn.OpenStreamEarly()
		} else {
			st, err = conn.OpenStream()
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(st, got); err != nil || string(got) != "hello" {
			t.Fatalf("echo (early %v): %q, %v", early, got, err)
		}
		st.Close()
	}
}
