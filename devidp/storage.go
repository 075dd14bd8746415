package devidp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Lifetimes. A login left at the form longer than authRequestTTL starts
// again; codes are single-use and die with their request.
const (
	authRequestTTL = 10 * time.Minute
	accessTokenTTL = time.Hour
	idTokenTTL     = time.Hour
)

// scopeGroups asks for the groups claim, as at Dex and most providers.
const scopeGroups = "groups"

// errNotSupported answers the storage calls of grants this provider does
// not offer (refresh, JWT profile, introspection); the OP never makes them
// for the clients it has, but the interface requires them.
var errNotSupported = errors.New("not supported by the development provider")

// storage is the in-memory op.Storage: users and clients are fixed at
// start, auth requests and tokens live in maps until they expire.
type storage struct {
	now     func() time.Time
	users   map[string]*User // by email (normalised)
	subs    map[string]*User // by subject
	clients map[string]*client
	key     signingKey

	mu       sync.Mutex // guards the maps below
	requests map[string]*authRequest
	codes    map[string]string // code -> auth request ID
	tokens   map[string]*accessToken
}

var _ op.Storage = (*storage)(nil)

type accessToken struct {
	subject, clientID string
	scopes            []string
	expiry            time.Time
}

// authRequest is immutable once stored: the login replaces it with a copy
// (see login), so the OP's getters need no lock.
type authRequest struct {
	id            string
	created       time.Time
	clientID      string
	redirectURI   string
	state         string
	nonce         string
	scopes        []string
	responseType  oidc.ResponseType
	responseMode  oidc.ResponseMode
	codeChallenge *oidc.CodeChallenge

	// Set by a successful login.
	subject  string
	amr      []string
	authTime time.Time
}

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return a.amr }
func (a *authRequest) GetAudience() []string                 { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.codeChallenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.subject != "" }

// client is a registered relying party: confidential (a secret, sent with
// client_secret_basic or client_secret_post) or public (PKCE alone).
type client struct {
	id, secret   string
	redirectURIs []string
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }
func (c *client) LoginURL(id string) string        { return loginPath + "?authRequestID=" + id }
func (c *client) AccessTokenType() op.AccessTokenType {
	return op.AccessTokenTypeBearer
}
func (c *client) IDTokenLifetime() time.Duration { return idTokenTTL }

// DevMode would let http redirect URIs through without further checks;
// the OP's own rules (http only for a confidential web client or a
// native one on loopback) are what the broker meets in production.
func (c *client) DevMode() bool { return false }
func (c *client) ApplicationType() op.ApplicationType {
	if c.secret == "" {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.secret == "" {
		return oidc.AuthMethodNone
	}
	// Basic is the registered method; the OP also takes the secret in the
	// form (op.Config.AuthMethodPost), and checks both the same way.
	return oidc.AuthMethodBasic
}
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(scope string) bool { return scope == scopeGroups }

// IDTokenUserinfoClaimsAssertion puts email, name and groups in the ID
// token itself, as the broker expects of most providers (it falls back to
// userinfo otherwise, which the tests also exercise).
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ *signingKey }

func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }

// login checks email and password for the auth request id and, when they
// match, marks the request done for that user. It says only whether the
// login succeeded: the form must not tell which of the two was wrong.
func (s *storage) login(id, email, password string) (ok bool, err error) {
	s.mu.Lock()
	req, found := s.requests[id]
	s.mu.Unlock()
	if !found || s.expired(req) {
		return false, errLoginExpired
	}
	u := s.users[strings.ToLower(strings.TrimSpace(email))]
	if u == nil {
		// Spend the time a real check would, so an unknown email does not
		// answer faster than a wrong password.
		(&User{Password: "\x00"}).checkPassword(password)
		return false, nil
	}
	if !u.checkPassword(password) {
		return false, nil
	}
	done := *req
	done.subject = u.Subject
	done.amr = slices.Clone(u.AMR)
	done.authTime = s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, still := s.requests[id]; !still {
		return false, errLoginExpired
	}
	s.requests[id] = &done
	return true, nil
}

func (s *storage) expired(r *authRequest) bool {
	return s.now().Sub(r.created) > authRequestTTL
}

func (s *storage) CreateAuthRequest(ctx context.Context, in *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	if slices.Contains(in.Prompt, oidc.PromptNone) {
		// There are no sessions here: every login shows the form.
		return nil, oidc.ErrLoginRequired()
	}
	req := &authRequest{
		id:           rand.Text(),
		created:      s.now(),
		clientID:     in.ClientID,
		redirectURI:  in.RedirectURI,
		state:        in.State,
		nonce:        in.Nonce,
		scopes:       in.Scopes,
		responseType: in.ResponseType,
		responseMode: in.ResponseMode,
	}
	if in.CodeChallenge != "" {
		req.codeChallenge = &oidc.CodeChallenge{Challenge: in.CodeChallenge, Method: in.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Sweep here rather than on a timer: a development provider sees few
	// logins, and this keeps it free of goroutines.
	for id, r := range s.requests {
		if s.expired(r) {
			delete(s.requests, id)
		}
	}
	for code, id := range s.codes {
		if _, ok := s.requests[id]; !ok {
			delete(s.codes, code)
		}
	}
	for id, t := range s.tokens {
		if s.now().After(t.expiry) {
			delete(s.tokens, id)
		}
	}
	s.requests[req.id] = req
	return req, nil
}

func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok || s.expired(r) {
		return nil, errors.New("auth request not found or expired")
	}
	return r, nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid, used or expired")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest is called once the code is redeemed: deleting the
// request and its code makes the code single-use.
func (s *storage) DeleteAuthRequest(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	var clientID string
	if ar, ok := req.(*authRequest); ok {
		clientID = ar.clientID
	}
	t := &accessToken{
		subject:  req.GetSubject(),
		clientID: clientID,
		scopes:   req.GetScopes(),
		expiry:   s.now().Add(accessTokenTTL),
	}
	id := rand.Text()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = t
	return id, t.expiry, nil
}

func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errNotSupported
}

func (s *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.tokens {
		if t.subject == userID && t.clientID == clientID {
			delete(s.tokens, id)
		}
	}
	return nil
}

func (s *storage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[tokenOrID]; ok {
		if t.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.tokens, tokenOrID)
	}
	return nil
}

func (s *storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(ctx context.Context) (op.SigningKey, error) { return &s.key, nil }

func (s *storage) SignatureAlgorithms(ctx context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(ctx context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{&s.key}}, nil
}

func (s *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, ok := s.clients[id]
	if !ok {
		return nil, errors.New("unknown client")
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	c, ok := s.clients[id]
	if !ok || c.secret == "" || !constantTimeEqual(c.secret, secret) {
		return errors.New("wrong client or secret")
	}
	return nil
}

func (s *storage) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	u, ok := s.subs[userID]
	if !ok {
		return errors.New("user not found")
	}
	ui.Subject = u.Subject
	for _, scope := range scopes {
		switch scope {
		case oidc.ScopeEmail:
			ui.Email = u.Email
			ui.EmailVerified = true
		case oidc.ScopeProfile:
			ui.Name = u.Name
			ui.PreferredUsername = u.Email
		case scopeGroups:
			ui.AppendClaims("groups", slices.Clone(u.Groups))
		}
	}
	return nil
}

func (s *storage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || s.now().After(t.expiry) || t.subject != subject {
		return errors.New("token invalid or expired")
	}
	return s.SetUserinfoFromScopes(ctx, ui, t.subject, t.clientID, t.scopes)
}

func (s *storage) SetIntrospectionFromToken(ctx context.Context, in *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	return errNotSupported
}

func (s *storage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(ctx context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	return nil, errNotSupported
}

func (s *storage) ValidateJWTProfileScopes(ctx context.Context, userID string, scopes []string) ([]string, error) {
	return nil, errNotSupported
}

func (s *storage) Health(ctx context.Context) error { return nil }
