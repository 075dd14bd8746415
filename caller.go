package fieldpass

import "context"

// Caller is a person (or bot) acting through a broker token: who they are,
// the token they presented, and what their login proved. Whatever decides
// on a request (the API's role checks, the session manager's connect
// decision) takes it whole, so that every rule sees the same facts.
type Caller struct {
	User  *User
	Token *Token
	// MFA is true when the login that issued Token asserted multi-factor
	// authentication (identity.MFAPolicy). Unknown counts as false: fail
	// closed.
	MFA bool
	// ByCookie is true when the token came from the portal's cookie: then
	// state-changing requests must also carry a valid CSRF token.
	ByCookie bool
	// Client is the address the request came from, as the edge decided it
	// (behind trusted proxies, the client they name): the record of a
	// refused operation says from where.
	Client string
	// ServedBy names the broker of the fleet that received the request
	// and carried it here (brokerlink); "" when it came here directly.
	ServedBy string
}

type callerKey struct{}

// NewContextWithCaller returns ctx carrying c.
func NewContextWithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFromContext returns the caller in ctx, or nil.
func CallerFromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}
