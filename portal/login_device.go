package portal

// The device-style login of the CLI (RFC 8628 in shape): the CLI starts a
// login and gets a secret device code and a short user code; the person
// opens the verification page in a browser where they are logged in to the
// portal, confirms the user code, and the CLI, polling with the device code,
// receives a CLI token once. Logins in progress live in Postgres
// (postgres/login.go): several brokers share one name, and the start, the
// approval page and each poll may each reach a different one, or a broker
// restarted in between.

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/ratelimit"
)

const (
	deviceLoginTTL      = 10 * time.Minute
	deviceLoginInterval = 5 * time.Second
	// slowDownStep is added to a client's interval each time it polls too
	// fast (RFC 8628 3.5).
	slowDownStep = 5 * time.Second
	// pollTolerance forgives network jitter: a poll this much early is
	// not too fast.
	pollTolerance = time.Second
	// maxDeviceLogins bounds the logins in progress (each a row of a few
	// hundred bytes; starting one needs no authentication). Past it, the oldest
	// pending login of the client holding the most is dropped, so a flood
	// evicts itself rather than everyone else (issue 10).
	maxDeviceLogins = 10000
	// maxDeviceLoginsPerClient bounds one client address's logins in
	// progress (an IPv6 address by its /64): a start past it drops that
	// client's oldest pending login. A person needs one.
	maxDeviceLoginsPerClient = 5
	// maxAgentLen clips the client's User-Agent shown on the approval page.
	maxAgentLen      = 64
	deviceCodePrefix = "fpd_"
	// userCodeAlphabet has no vowels (no words) and no look-alikes
	// (0/O, 1/I/L are absent): 20^8, about 2^34.6 codes (RFC 8628 6.1).
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
)

// deviceLoginLimits are the caps on logins in progress.
var deviceLoginLimits = postgres.DeviceLoginLimits{Max: maxDeviceLogins, PerClient: maxDeviceLoginsPerClient}

// clientAgent is the User-Agent of r as the approval page may show it:
// printable ASCII, clipped; "unknown" without one.
func clientAgent(r *http.Request) string {
	ua := strings.Map(func(c rune) rune {
		if c < 0x20 || c > 0x7e {
			return -1
		}
		return c
	}, r.UserAgent())
	if len(ua) > maxAgentLen {
		ua = ua[:maxAgentLen] + "…"
	}
	if ua == "" {
		return "unknown"
	}
	return ua
}

func formatUserCode(c string) string { return c[:4] + "-" + c[4:] }

// normalizeUserCode accepts what people type: any case, with or without
// the dash or spaces.
func normalizeUserCode(s string) (string, bool) {
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(s)))
	if len(s) != userCodeLen {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(userCodeAlphabet, rune(s[i])) {
			return "", false
		}
	}
	return s, true
}

func (ls *loginState) newUserCode() (string, error) {
	out := make([]byte, 0, userCodeLen)
	buf := make([]byte, 16)
	for len(out) < userCodeLen {
		if _, err := ls.rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// Rejection sampling: 240 is the largest multiple of 20 <= 256.
			if b < 240 && len(out) < userCodeLen {
				out = append(out, userCodeAlphabet[int(b)%len(userCodeAlphabet)])
			}
		}
	}
	return string(out), nil
}

func hashDeviceCode(code string) [32]byte { return sha256.Sum256([]byte(code)) }

// HandleDeviceLoginStart starts a CLI login: POST /api/v1/login/device.
func (p *Portal) HandleDeviceLoginStart() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil || ls.origin == nil {
			p.writeError(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE,
				"this broker has no identity provider configured: ask an operator for a token (fieldpass-broker user token) and set FIELDPASS_TOKEN"))
			return
		}
		raw, err := ls.randomString(32)
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		deviceCode := deviceCodePrefix + raw
		now := ls.now()
		client := ratelimit.ClientAddr(r)
		d := &postgres.DeviceLogin{CodeHash: hashDeviceCode(deviceCode), Started: now, Expires: now.Add(deviceLoginTTL),
			Interval: deviceLoginInterval, Client: client, ClientKey: ratelimit.ClientKey(client), Agent: clientAgent(r)}
		if err := ls.db.StartDeviceLogin(r.Context(), d, deviceLoginLimits, ls.newUserCode); err != nil {
			p.writeError(w, r, err)
			return
		}
		userCode := d.UserCode
		p.log.Info("device login started", "client", d.Client, "agent", d.Agent)
		httpapi.WriteJSON(w, http.StatusOK, httpapi.DeviceLoginStart{
			DeviceCode:      deviceCode,
			UserCode:        formatUserCode(userCode),
			VerificationURI: ls.origin.String() + "/login/device",
			ExpiresIn:       int(deviceLoginTTL / time.Second),
			Interval:        int(deviceLoginInterval / time.Second),
		})
	}
}

// pollError is a poll's answer before success: 400 with an RFC 8628 code.
func pollError(w http.ResponseWriter, code, message string) {
	httpapi.WriteJSON(w, http.StatusBadRequest, httpapi.ErrorResponse{Code: code, Message: message})
}

// HandleDeviceLoginToken answers the CLI's polls: POST /api/v1/login/device/token.
func (p *Portal) HandleDeviceLoginToken() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		var req httpapi.DeviceLoginPoll
		if err := httpapi.DecodeJSON(w, r, 4<<10, &req); err != nil {
			p.writeError(w, r, err)
			return
		}
		h := hashDeviceCode(req.DeviceCode)
		now := ls.now()
		// Decided under the row's lock: of two polls racing on two brokers,
		// one moves the approved login to issuing, the other sees it so.
		var answer, message string
		var claimed postgres.DeviceLogin
		err := ls.db.DeviceLoginByCode(r.Context(), h, func(d *postgres.DeviceLogin) postgres.DeviceLoginChange {
			if d == nil || !now.Before(d.Expires) {
				answer, message = "expired", "this login is unknown, expired or already used: run fieldpass login again"
				if d != nil {
					return postgres.DeviceLoginDelete
				}
				return postgres.DeviceLoginKeep
			}
			if !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < d.Interval-pollTolerance {
				d.Interval += slowDownStep
				d.LastPoll = now
				answer, message = "slow_down", "polling too fast: wait "+fieldpass.FormatDuration(d.Interval)+" between polls"
				return postgres.DeviceLoginSave
			}
			d.LastPoll = now
			switch d.Status {
			case postgres.DeviceLoginDenied:
				answer, message = "denied", "the login was denied in the browser"
				return postgres.DeviceLoginDelete
			case postgres.DeviceLoginApproved:
				d.Status = postgres.DeviceLoginIssuing
				claimed = *d
			default: // pending, or another poll is issuing the token right now
				answer, message = "authorization_pending", "waiting for approval in the browser"
			}
			return postgres.DeviceLoginSave
		})
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		if answer != "" {
			pollError(w, answer, message)
			return
		}

		ctx := r.Context()
		rec := loginRecord{MFA: claimed.MFA, AMR: claimed.AMR, ACR: claimed.ACR}
		user, err := ls.db.User(ctx, claimed.Email)
		var token string
		var t *fieldpass.Token
		if err == nil {
			token, t, err = ls.db.IssueToken(ctx, fieldpass.UserActor(user.Email), user.Email, fieldpass.TokenCLI, ls.oidc.CLITokenTTL)
		}
		if err == nil {
			rec.Expires = t.ExpiresAt
			err = p.recordLogin(ctx, t, rec, map[string]any{"method": "device", "client": ratelimit.ClientAddr(r), "approved_by": claimed.Session})
		}
		// Whatever the request's fate, the claim is settled: a fresh
		// context, so that a poll cut short leaves no login stuck issuing.
		// (A broker that dies right here leaves it issuing until it
		// expires: the CLI is told to wait, then to log in again.)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		retry := err != nil && fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN
		if serr := ls.db.DeviceLoginByCode(sctx, h, func(d *postgres.DeviceLogin) postgres.DeviceLoginChange {
			switch {
			case d == nil:
				return postgres.DeviceLoginKeep
			case retry:
				d.Status = postgres.DeviceLoginApproved // a later poll may succeed
				return postgres.DeviceLoginSave
			}
			return postgres.DeviceLoginDelete
		}); serr != nil {
			p.log.Error("device login: settle the claim", "err", serr)
		}
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		p.log.Info("login", "email", user.Email, "method", "device", "token_id", t.ID, "mfa", rec.MFA, "client", ratelimit.ClientAddr(r))
		httpapi.WriteJSON(w, http.StatusOK, httpapi.DeviceLoginToken{Token: token, Email: user.Email, Roles: user.Roles, ExpiresAt: t.ExpiresAt})
	}
}

// sessionFromCookie authenticates the portal cookie of a page request;
// nil if there is no usable session.
func (p *Portal) sessionFromCookie(r *http.Request) (*fieldpass.Caller, error) {
	token := p.SessionToken(r)
	if token == "" {
		return nil, nil
	}
	u, t, err := p.login.db.Authenticate(r.Context(), token)
	if err != nil {
		if c := fieldpass.ErrorCode(err); c == fieldpass.EINTERNAL || c == fieldpass.EUNAVAILABLE {
			return nil, err
		}
		return nil, nil
	}
	if t.Kind != fieldpass.TokenSession {
		return nil, nil
	}
	return &fieldpass.Caller{User: u, Token: t, ByCookie: true, Client: ratelimit.ClientAddr(r)}, nil
}

// deviceForm is the approval form of the verification page. Without
// Review, it asks for the code; with it, it shows the login the code names
// and offers Approve and Deny.
type deviceForm struct {
	CSRF, UserCode, Email, Roles, TTL string
	Review                            bool
	Agent, Client, Started, Expires   string // the login under review
}

// HandleDeviceLoginPage is the approval page of CLI logins: GET /login/device.
// It never fills the code in from the link: a person must type the code
// their own terminal shows, so a link an attacker sends (with the
// attacker's code in it) approves nothing in one click (issue 10).
func (p *Portal) HandleDeviceLoginPage() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		c, err := p.sessionFromCookie(r)
		if err != nil {
			p.loginFailed(w, r, err)
			return
		}
		if c == nil {
			// The code in a link is dropped here too: it would come back
			// only to be ignored.
			redirect(w, "/auth/login?"+url.Values{"return": {"/login/device"}}.Encode())
			return
		}
		pg := page{Title: "Log in the fieldpass command line",
			Paras: []string{"You are logged in as " + c.User.Email + ". Type the code that fieldpass login shows in your own terminal.",
				"Never enter a code someone else sent you: it would log them in as you."}}
		pg.Form = p.deviceForm(r, c)
		writePage(w, http.StatusOK, pg)
	}
}

// deviceForm is the approval form for caller c, without a code.
func (p *Portal) deviceForm(r *http.Request, c *fieldpass.Caller) *deviceForm {
	form := &deviceForm{CSRF: CSRFToken(r), Email: c.User.Email, TTL: fieldpass.FormatDuration(p.login.oidc.CLITokenTTL)}
	if len(c.User.Roles) > 0 {
		form.Roles = roleList(c.User.Roles)
	}
	return form
}

// minutes renders a short duration for people: "2 minutes".
func minutes(d time.Duration) string {
	switch m := int(d.Round(time.Minute) / time.Minute); {
	case m < 1:
		return "less than a minute"
	case m == 1:
		return "1 minute"
	default:
		return strconv.Itoa(m) + " minutes"
	}
}

// HandleDeviceLoginApprove approves or denies a CLI login: POST /login/device.
func (p *Portal) HandleDeviceLoginApprove() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		c := fieldpass.CallerFromContext(r.Context())
		// Only a browser session approves: a CLI token minting itself a
		// successor would outlive its login and skip the identity provider.
		if !c.ByCookie || c.Token.Kind != fieldpass.TokenSession {
			writePage(w, http.StatusForbidden, page{Title: "Approve in the browser",
				Paras: []string{"A command-line login is approved from a browser logged in to the portal, not with a token."}})
			return
		}
		if !ls.approves.Allow(c.User.Email) {
			w.Header().Set("Retry-After", "10")
			writePage(w, http.StatusTooManyRequests, page{Title: "Too many attempts", Paras: []string{"Too many approvals from your account: wait a minute and try again."}, Retry: "/login/device"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		action := r.PostFormValue("action")
		if action != "approve" && action != "deny" && action != "review" {
			writePage(w, http.StatusBadRequest, page{Title: "Nothing done", Paras: []string{"Choose Approve or Deny."}, Retry: "/login/device"})
			return
		}
		uc, ok := normalizeUserCode(r.PostFormValue("user_code"))
		if !ok {
			writePage(w, http.StatusBadRequest, page{Title: "Invalid code",
				Paras: []string{"A code has 8 letters, like BCDF-GHJK. Check the code in your terminal."}, Retry: "/login/device"})
			return
		}
		if action == "review" {
			p.reviewDeviceLogin(w, r, c, uc)
			return
		}
		var rec loginRecord
		if action == "approve" {
			rec = p.sessionRecord(r, c)
			if p := ls.oidc.Provider.MFA(); p.Require && !rec.MFA {
				writePage(w, http.StatusForbidden, page{Title: "Multi-factor login required",
					Paras: []string{p.Missing(rec.AMR, rec.ACR)}, Retry: "/auth/login?return=%2Flogin%2Fdevice"})
				return
			}
		}
		found, err := ls.pending(r.Context(), uc, func(d *postgres.DeviceLogin) postgres.DeviceLoginChange {
			if action == "deny" {
				d.Status = postgres.DeviceLoginDenied
				return postgres.DeviceLoginSave
			}
			d.Status, d.Email, d.Session = postgres.DeviceLoginApproved, c.User.Email, c.Token.ID
			d.MFA, d.AMR, d.ACR = rec.MFA, rec.AMR, rec.ACR
			return postgres.DeviceLoginSave
		})
		if !found || err != nil {
			noPending(w, r, p, uc, err)
			return
		}
		if action == "deny" {
			p.log.Info("device login denied", "email", c.User.Email, "user_code", formatUserCode(uc))
			writePage(w, http.StatusOK, page{Title: "Login denied", Paras: []string{"The command line that showed " + formatUserCode(uc) + " gets no token."}})
			return
		}
		p.log.Info("device login approved", "email", c.User.Email, "user_code", formatUserCode(uc), "session_token_id", c.Token.ID)
		writePage(w, http.StatusOK, page{Title: "Login approved",
			Paras: []string{"The command line is logged in as " + c.User.Email + ". You can close this page and return to your terminal."}})
	}
}

// pending calls fn with the login waiting for approval under the user code
// uc, its row locked, and keeps or saves it as fn says. It reports false
// when no login waits for uc.
func (ls *loginState) pending(ctx context.Context, uc string, fn func(*postgres.DeviceLogin) postgres.DeviceLoginChange) (bool, error) {
	now := ls.now()
	found := false
	err := ls.db.DeviceLoginByUserCode(ctx, uc, func(d *postgres.DeviceLogin) postgres.DeviceLoginChange {
		if d == nil || !now.Before(d.Expires) || d.Status != postgres.DeviceLoginPending {
			return postgres.DeviceLoginKeep
		}
		found = true
		return fn(d)
	})
	return found, err
}

// noPending answers the page that says no login waits for the user code
// uc, or the failure to find out.
func noPending(w http.ResponseWriter, r *http.Request, p *Portal, uc string, err error) {
	if err != nil {
		p.loginFailed(w, r, err, "/login/device")
		return
	}
	writePage(w, http.StatusNotFound, page{Title: "No such login",
		Paras: []string{"No login waits for the code " + formatUserCode(uc) + ": check it, or run fieldpass login again (codes last 10 minutes and are used once)."},
		Retry: "/login/device"})
}

// sessionRecord is what the login of the caller's session asserted.
func (p *Portal) sessionRecord(r *http.Request, c *fieldpass.Caller) loginRecord {
	ls := p.login
	ls.mu.Lock()
	rec, ok := ls.mfa[c.Token.ID]
	ls.mu.Unlock()
	if ok {
		return rec
	}
	rec, err := p.lookupLogin(r.Context(), c.Token)
	if err != nil {
		p.log.Error("look up login of token", "token_id", c.Token.ID, "err", err)
		return loginRecord{}
	}
	ls.remember(c.Token.ID, rec)
	return rec
}

// reviewDeviceLogin shows the login that the typed code uic names, with what
// approving it gives (RFC 8628 5.4: the person must be able to tell a
// login they started from one they did not), and the Approve and Deny
// buttons.
func (p *Portal) reviewDeviceLogin(w http.ResponseWriter, r *http.Request, c *fieldpass.Caller, uc string) {
	ls := p.login
	var d postgres.DeviceLogin
	found, err := ls.pending(r.Context(), uc, func(l *postgres.DeviceLogin) postgres.DeviceLoginChange {
		d = *l
		return postgres.DeviceLoginKeep
	})
	if !found || err != nil {
		noPending(w, r, p, uc, err)
		return
	}
	now := ls.now()
	form := p.deviceForm(r, c)
	form.Review, form.UserCode = true, formatUserCode(uc)
	form.Agent, form.Client = d.Agent, d.Client
	form.Started = d.Started.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + minutes(now.Sub(d.Started)) + " ago)"
	form.Expires = minutes(d.Expires.Sub(now))
	writePage(w, http.StatusOK, page{Title: "Approve this command-line login?", Form: form,
		Paras: []string{"Check that this is the login you started just now, from your own terminal."}})
}
