package portal

// An internal test: the return-address check is a pure function of
// untrusted input, fuzzed directly.

import (
	"net/url"
	"strings"
	"testing"
)

func FuzzLocalReturn(f *testing.F) {
	for _, s := range []string{"/", "/devices?x=1", "//evil", `/\evil`, "/%2F/evil", "https://evil/", "http://127.0.0.1:8080/x",
		"/%5C%5Cevil", "/\t/evil", "javascript:x", "/auth/callback", "///x", "/a/../..//evil", "?x", "#frag", "/%zz"} {
		f.Add(s)
	}
	ls := newLoginState(Config{PublicURL: "http://127.0.0.1:8080"})
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ls.localReturn(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, `/\`) || hasUnsafe(got) {
			t.Fatalf("localReturn(%q) = %q: not a plain local path", raw, got)
		}
		base, _ := url.Parse("http://127.0.0.1:8080/login/device")
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("localReturn(%q) = %q: unparseable: %v", raw, got, err)
		}
		if r := base.ResolveReference(u); r.Host != base.Host || r.Scheme != base.Scheme {
			t.Fatalf("localReturn(%q) = %q resolves to %s", raw, got, r)
		}
		dec, _ := url.PathUnescape(u.EscapedPath())
		if strings.HasPrefix(dec, "//") || strings.Contains(dec, `\`) {
			t.Fatalf("localReturn(%q) = %q decodes to %q", raw, got, dec)
		}
	})
}
