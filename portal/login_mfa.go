package portal

import (
	"context"
	"time"

	"github.com/fieldpass/fieldpass"
)

// loginRecord is what a login asserted about how the person authenticated.
type loginRecord struct {
	MFA     bool
	AMR     []string
	ACR     string
	Expires time.Time // the token's expiry: forget the record then
}

// sweepLocked drops expired MFA records (device logins are swept by the
// store at each start). ls.mu is held.
func (ls *loginState) sweepLocked(now time.Time) {
	for id, rec := range ls.mfa {
		if !now.Before(rec.Expires) {
			delete(ls.mfa, id)
		}
	}
	ls.swept = now
}

func (ls *loginState) remember(tokenID string, rec loginRecord) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	now := ls.now()
	if now.Sub(ls.swept) > time.Minute {
		ls.sweepLocked(now)
	}
	ls.mfa[tokenID] = rec
}

func (ls *loginState) forget(tokenID string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.mfa, tokenID)
}

// MFAAsserted reports whether the login that issued token t asserted
// multi-factor authentication (identity.MFAPolicy: amr/acr values), for
// policies that demand it, such as devices whose labels require MFA. A CLI
// token from the device flow inherits the assertion of the portal session
// that approved it. Automation tokens, tokens of unknown origin, and any
// failure to find out answer false: fail closed.
//
// The assertion is kept in memory, and durably in the token's user.login
// audit event (details.mfa), read back after a restart or on another broker.
func (p *Portal) MFAAsserted(ctx context.Context, t *fieldpass.Token) bool {
	if t == nil || t.Kind == fieldpass.TokenAutomation {
		return false
	}
	ls := p.login
	ls.mu.Lock()
	rec, ok := ls.mfa[t.ID]
	ls.mu.Unlock()
	if ok {
		return rec.MFA
	}
	rec, err := p.lookupLogin(ctx, t)
	if err != nil {
		p.log.Error("look up login of token", "token_id", t.ID, "err", err)
		return false
	}
	ls.remember(t.ID, rec)
	return rec.MFA
}

// lookupLogin finds the user.login event of token t, appended right after
// it was issued.
func (p *Portal) lookupLogin(ctx context.Context, t *fieldpass.Token) (loginRecord, error) {
	f := fieldpass.AuditFilter{Action: AuditUserLogin, Target: fieldpass.UserTarget(t.Email),
		Since: t.CreatedAt.Add(-time.Second), Until: t.CreatedAt.Add(time.Hour), Limit: 100}
	for range 10 {
		evs, err := p.login.db.AuditEvents(ctx, f)
		if err != nil {
			return loginRecord{}, err
		}
		for _, e := range evs {
			if id, _ := e.Details["token_id"].(string); id == t.ID {
				mfa, _ := e.Details["mfa"].(bool)
				acr, _ := e.Details["acr"].(string)
				var amr []string
				if a, ok := e.Details["amr"].([]any); ok {
					for _, v := range a {
						if s, ok := v.(string); ok {
							amr = append(amr, s)
						}
					}
				}
				return loginRecord{MFA: mfa, AMR: amr, ACR: acr, Expires: t.ExpiresAt}, nil
			}
		}
		if len(evs) < f.Limit {
			break
		}
		f.AfterSeq = evs[len(evs)-1].Seq
	}
	return loginRecord{Expires: t.ExpiresAt}, nil
}
