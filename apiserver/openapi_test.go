package apiserver_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/httpapi"
)

// The OpenAPI description names exactly the router's /api/v1 routes, each
// with its methods: a route added without its description, or described
// and gone, fails here. The portal's pages are not API.
func TestOpenAPICoversRoutes(t *testing.T) {
	f := newFixture(t)
	status, body := f.call(t, kNone, "GET", "/api/v1/openapi.json", "", "")
	if status != 200 {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", status, body)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("not an OpenAPI 3 document: %v (openapi %q)", err, doc.OpenAPI)
	}
	var described []string
	for p, ops := range doc.Paths {
		for m := range ops {
			described = append(described, strings.ToUpper(m)+" "+p)
		}
	}
	routes, ok := apiserver.New(apiserver.Config{DB: f.db}).Handler().(chi.Routes)
	if !ok {
		t.Fatal("the API handler is not a chi router")
	}
	var served []string
	wildcard := regexp.MustCompile(`/\*$`)
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/api/v1/") || wildcard.MatchString(route) {
			return nil
		}
		served = append(served, method+" "+strings.TrimSuffix(route, "/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(described)
	slices.Sort(served)
	served = slices.Compact(served)
	for _, r := range served {
		if !slices.Contains(described, r) {
			t.Errorf("%s is served but not in openapi.json", r)
		}
	}
	for _, r := range described {
		if !slices.Contains(served, r) {
			t.Errorf("%s is in openapi.json but not served", r)
		}
	}
	if len(served) < 15 {
		t.Fatalf("walked only %d /api/v1 routes: %v", len(served), served)
	}
}

// GET /api/v1/audit speaks the API's dialect: snake_case keys, hex hashes.
func TestAuditJSONDialect(t *testing.T) {
	f := newFixture(t)
	status, body := f.call(t, kAuditor, "GET", "/api/v1/audit?limit=2", "", "")
	if status != 200 {
		t.Fatalf("GET /api/v1/audit: %d %s", status, body)
	}
	var evs []map[string]any
	if err := json.Unmarshal(body, &evs); err != nil || len(evs) != 2 {
		t.Fatalf("%v: %s", err, body)
	}
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, e := range evs {
		var keys []string
		for k := range e {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"action", "actor", "at", "details", "hash", "prev_hash", "seq", "target"}; !slices.Equal(keys, want) {
			t.Fatalf("keys %v, want %v", keys, want)
		}
		for _, k := range []string{"hash", "prev_hash"} {
			if s, _ := e[k].(string); !hex64.MatchString(s) {
				t.Errorf("%s = %v, want 64 hex digits", k, e[k])
			}
		}
	}
}

// The bodies described are the bodies sent: each schema's properties are
// exactly the JSON fields of the Go type it stands for (a field added to a
// body or an answer without its description fails here).
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	f := newFixture(t)
	_, body := f.call(t, kNone, "GET", "/api/v1/openapi.json", "", "")
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"Me": httpapi.Me{}, "DeviceView": httpapi.DeviceView{}, "GrantCreate": httpapi.GrantCreate{},
		"RequestCreate": httpapi.RequestCreate{}, "SessionEnd": httpapi.SessionEnd{}, "RequestDecision": httpapi.RequestDecision{},
		"GrantRevoke": httpapi.GrantRevoke{}, "DeviceLoginStart": httpapi.DeviceLoginStart{}, "DeviceLoginPoll": httpapi.DeviceLoginPoll{},
		"DeviceLoginToken": httpapi.DeviceLoginToken{}, "Grant": fieldpass.Grant{}, "AccessRequest": fieldpass.AccessRequest{},
		"Session": fieldpass.Session{},
	} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		var described, fields []string
		for p := range s.Properties {
			described = append(described, p)
		}
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag != "" && tag != "-" && typ.Field(i).IsExported() {
				fields = append(fields, tag)
			}
		}
		slices.Sort(described)
		slices.Sort(fields)
		if !slices.Equal(described, fields) {
			t.Errorf("schema %s has %v; the Go type %s sends %v", name, described, typ, fields)
		}
	}
}
