package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/kstatus"
)

// More than one Authorization value is refused with 400 on every route the
// engine has (usage, watch, console, probes, unknown paths), before the
// authentication middleware or any route handler runs: a proxy checking
// one copy and the API another must never let a token through.
func TestMoreThanOneAuthorizationIs400OnEveryRoute(t *testing.T) {
	// Never dialled: no handler may run.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	ran := false
	engine := newEngine(t, rdb, api.WithAuthenticate(func(c *gin.Context) {
		ran = true
		t.Errorf("authentication ran for %s", c.Request.URL.Path)
		c.AbortWithStatus(http.StatusTeapot)
	}))
	h := conform(t, engine)
	paths := []string{"/no/such/route"}
	for _, r := range engine.Routes() {
		paths = append(paths, strings.ReplaceAll(r.Path, ":project", "team"))
	}
	if len(paths) < 8 {
		t.Fatalf("only %d routes: %v", len(paths), paths)
	}
	for _, path := range paths {
		for _, hdr := range [][]string{
			{"Bearer good", "Bearer other"},
			{"Bearer good", "Bearer good"},
			{"Bearer good", ""},
		} {
			t.Run(path, func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, path+"?start=2025-06-01&end=2025-06-30", nil)
				req.Header["Authorization"] = hdr
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusBadRequest {
					t.Fatalf("%d %s, want 400", rec.Code, rec.Body)
				}
				var st kstatus.Status
				if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" || st.Code != 400 || st.Reason != "BadRequest" ||
					!strings.Contains(st.Message, "more than one Authorization header") {
					t.Fatalf("body %s (%v)", rec.Body, err)
				}
			})
		}
	}
	if ran {
		t.Fatal("a handler ran")
	}
	// One value still reaches authentication.
	req := httptest.NewRequest(http.MethodGet, api.PlatformPath+"?start=2025-06-01&end=2025-06-30", nil)
	req.Header.Set("Authorization", "Bearer good")
	rec := httptest.NewRecorder()
	ran = false
	// Not conform: the 418 is this test's stand-in authenticator, no
	// answer of the API's.
	h2 := newEngine(t, rdb, api.WithAuthenticate(func(c *gin.Context) { ran = true; c.AbortWithStatus(http.StatusTeapot) }))
	h2.ServeHTTP(rec, req)
	if !ran || rec.Code != http.StatusTeapot {
		t.Fatalf("one Authorization: authentication ran %v, code %d", ran, rec.Code)
	}
}

// TestNamesFollowTheWireFormat: the API takes a name exactly when a sample
// could carry it (sample.CheckName): "-a", "a-", "a..b" can never have data
// and are 400 naming the parameter, on both routes.
func TestNamesFollowTheWireFormat(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never reached: the names are refused first
	t.Cleanup(func() { rdb.Close() })
	h := newServer(t, rdb)
	for _, c := range []struct{ path, query, param string }{
		{usagePath(""), "kind=namespace&name=-a", "name"},
		{usagePath(""), "kind=namespace&name=a-", "name"},
		{usagePath(""), "kind=project&name=-team", "name"},
		{usagePath(""), "kind=cluster&name=east..b", "name"},
		{usagePath(""), "kind=cluster&name=east.-b", "name"},
		{usagePath(""), "kind=namespace&name=east.b", "name"},
		{usagePath("-team"), "", "project"},
		{usagePath("team-"), "", "project"},
		{usagePath("team"), "kind=namespace&name=-a", "name"},
	} {
		t.Run(c.path+"?"+c.query, func(t *testing.T) {
			rec := get(h, c.path, mustQuery(t, "start=2025-06-01&end=2025-06-30&"+c.query))
			var st kstatus.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != 400 || !strings.HasPrefix(st.Message, c.param+": ") {
				t.Fatalf("%d %s, want 400 naming %s", rec.Code, rec.Body, c.param)
			}
		})
	}
}
