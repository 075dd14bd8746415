package devidp

import (
	"net/http"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// The login form's paths; the OP sends the browser to loginPath (see
// client.LoginURL) and takes it back at its authorize callback.
const (
	loginPath = "/login"
	stylePath = "/login/style.css"
)

// routes joins the OP (discovery, JWKS, authorize, token, userinfo, at the
// library's default paths) and the login form.
func routes(provider *op.Provider, l *loginForm) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+loginPath, l.show())
	mux.Handle("POST "+loginPath, op.NewIssuerInterceptor(provider.IssuerFromRequest).Handler(l.submit()))
	mux.Handle("GET "+stylePath, styleHandler())
	mux.Handle("/", provider)
	return mux
}
