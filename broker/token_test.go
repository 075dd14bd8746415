package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
)

// tokenCaller issues a CLI token of ttl to eng@example.com and returns the
// caller the connect handler would build from it.
func (se *sessionEnv) tokenCaller(ttl time.Duration) *fieldpass.Caller {
	se.tb.Helper()
	ctx := context.Background()
	tok, _, err := se.DB.IssueToken(ctx, testOperator, engineer, fieldpass.TokenCLI, ttl)
	if err != nil {
		se.tb.Fatal(err)
	}
	u, t, err := se.DB.Authenticate(ctx, tok)
	if err != nil {
		se.tb.Fatal(err)
	}
	return &fieldpass.Caller{User: u, Token: t}
}

// tokenEndsWithin opens a session as c with a stream, runs cut, and checks
// that the session and its stream end within a second with reason,
// recorded: a token that no longer holds must not keep carrying bytes.
func (se *sessionEnv) tokenEndsWithin(t *testing.T, c *fieldpass.Caller, reason fieldpass.EndReason, cut func() time.Time) {
	t.Helper()
	s, err := se.m.Open(context.Background(), c, "pump-1", "echo", "127.0.0.1")
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	st, closed := holdStream(t, s)
	defer st.Close()
	at := cut()
	select {
	case <-s.Done():
	case <-time.After(3 * time.Second):
		// What issue 10 found: the session goes on, and a new stream in it
		// still reaches the device.
		if st2, err := s.Stream(context.Background()); err == nil {
			st2.Close()
			t.Fatalf("session still live 3s after the token stopped holding; a new stream still opens")
		}
		t.Fatalf("session still live 3s after the token stopped holding")
	}
	took := time.Since(at)
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("stream still open after the session ended")
	}
	if took > time.Second {
		t.Errorf("session ended %s after the cause, want within 1s", took)
	}
	t.Logf("%s: session cut %s after the cause", reason, took.Round(time.Millisecond))
	if s.Reason() != reason {
		t.Errorf("reason %s, want %s", s.Reason(), reason)
	}
	if r := se.waitEnded(s.ID(), 5*time.Second); r.EndReason != reason || r.TokenID != c.Token.ID {
		t.Errorf("row: reason %s, token %q; want %s, %s", r.EndReason, r.TokenID, reason, c.Token.ID)
	}
}

func TestSessionCutOnTokenRevoked(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	c := se.tokenCaller(time.Hour)
	se.tokenEndsWithin(t, c, fieldpass.EndTokenRevoked, func() time.Time {
		time.Sleep(50 * time.Millisecond) // the echo comes back first
		at := time.Now()
		if _, err := se.DB.RevokeToken(context.Background(), testOperator, c.Token.ID); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestSessionCutOnLogout(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	c := se.tokenCaller(time.Hour)
	se.tokenEndsWithin(t, c, fieldpass.EndLoggedOut, func() time.Time {
		time.Sleep(50 * time.Millisecond)
		at := time.Now()
		// What POST /auth/logout does: the person revokes their own token.
		if _, err := se.DB.RevokeToken(context.Background(), fieldpass.UserActor(engineer), c.Token.ID); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestSessionCutOnTokenExpiry(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	c := se.tokenCaller(2 * time.Second)
	se.tokenEndsWithin(t, c, fieldpass.EndTokenExpired, func() time.Time {
		time.Sleep(time.Until(c.Token.ExpiresAt))
		return c.Token.ExpiresAt
	})
}

// A token that another session also used: revoking it ends every session
// it opened, and only those.
func TestTokenRevocationEndsOnlyItsSessions(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	c1, c2 := se.tokenCaller(time.Hour), se.tokenCaller(time.Hour)
	var a, b, other *broker.Session
	for _, x := range []struct {
		s **broker.Session
		c *fieldpass.Caller
	}{{&a, c1}, {&b, c1}, {&other, c2}} {
		s, err := se.m.Open(context.Background(), x.c, "pump-1", "echo", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		*x.s = s
	}
	if _, err := se.DB.RevokeToken(context.Background(), testOperator, c1.Token.ID); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a, 2*time.Second)
	waitDone(t, b, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	if r := other.Reason(); r != "" {
		t.Fatalf("the other token's session ended (%s)", r)
	}
}

// A caller whose token is already past its expiry or revoked (read before
// the change) is refused rather than given a session that ends at once
// unrecorded.
func TestOpenRefusesExpiredToken(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	c := se.tokenCaller(time.Hour)
	c.Token.ExpiresAt = time.Now().Add(-time.Second)
	_, err := se.m.Open(context.Background(), c, "pump-1", "echo", "127.0.0.1")
	if fieldpass.ErrorCode(err) != fieldpass.EEXPIRED {
		t.Fatalf("err = %v, want expired", err)
	}
	if se.m.Live() != 0 {
		t.Fatalf("%d live sessions", se.m.Live())
	}
}
