package devidp

import (
	"context"
	"html/template"
	"log/slog"
	"net/http"
)

// loginForm is the provider's only page: email and password, then back to
// the OP, which redirects to the client with a code.
type loginForm struct {
	storage  *storage
	callback func(ctx context.Context, authRequestID string) string
	logger   *slog.Logger
	csp      string
	page     *template.Template // parsed from loginHTML
}

// loginHTML has no script and no inline style, so the page works under the
// strict CSP it is sent with. The labels name their inputs (for screen
// readers, and for tests that find fields by label).
const loginHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Fieldpass development identity provider</title>
<link rel="stylesheet" href="/login/style.css">
</head>
<body>
<main>
<h1>Sign in</h1>
<p class="note">Fieldpass development identity provider: for development and tests only.</p>
{{if .Error}}<p class="error" role="alert" id="login-error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="id" value="{{.ID}}">
<label for="username">Email</label>
<input type="email" id="username" name="username" value="{{.Username}}" autocomplete="username" required autofocus{{if .Error}} aria-describedby="login-error"{{end}}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="submit">Sign in</button>
</form>
</main>
</body>
</html>
`

const loginStyle = `body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}
main{max-width:22rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem}
label,input,button{display:block;width:100%;box-sizing:border-box}
label{margin-top:1rem;font-weight:600}
input{padding:.5rem;margin-top:.25rem}
button{margin-top:1.5rem;padding:.6rem}
.note{color:#555;font-size:.9rem}
.error{color:#a00;font-weight:600}
`

type loginPage struct {
	ID, Username, Error string
}

func (l *loginForm) render(w http.ResponseWriter, status int, p loginPage) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", l.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if err := l.page.Execute(w, p); err != nil {
		l.logger.Error("render login form", "err", err)
	}
}

func (l *loginForm) show() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("authRequestID")
		if _, err := l.storage.AuthRequestByID(r.Context(), id); err != nil {
			http.Error(w, errLoginExpired.Error(), http.StatusBadRequest)
			return
		}
		l.render(w, http.StatusOK, loginPage{ID: id})
	})
}

func (l *loginForm) submit() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "cannot read the form", http.StatusBadRequest)
			return
		}
		id, email, password := r.PostForm.Get("id"), r.PostForm.Get("username"), r.PostForm.Get("password")
		ok, err := l.storage.login(id, email, password)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !ok {
			// Never the password, and the same answer whichever was wrong.
			l.logger.Info("login refused", "email", email)
			l.render(w, http.StatusForbidden, loginPage{ID: id, Username: email, Error: "Wrong email or password."})
			return
		}
		l.logger.Info("login", "email", email)
		http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
	})
}

func styleHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write([]byte(loginStyle))
	})
}
