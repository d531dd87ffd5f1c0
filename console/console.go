// Package console holds the web console: static assets (HTML, CSS, plain
// ES modules and the vendored Apache ECharts) embedded in the binary and
// served under Path by the API (api/console.go). The console talks only to
// the public API routes, so it shows exactly what an API client gets, and
// it needs no network beyond the API: no CDN, fonts or remote scripts.
//
// Layout of static/:
//
//	index.html           the usage page; loads vendor/echarts and app.js
//	app.js               wiring: state <-> URL, loading, rendering
//	chargeback.html/.js  the Chargeback page: the bill route by a kept label key
//	api.js               the one API client (auth header, Status errors, SSE over fetch)
//	state.js             view state <-> URL query, date presets
//	chartoption.js       the pure function building the ECharts option from API rows
//	totals.js            the scope's total per bucket, from rows the server sums
//	format.js            numbers with units, dates
//	views/*.js           one module per view (controls, tiles, chart, table, auth, breadcrumb)
//	vendor/echarts/      echarts.min.js of the pinned npm version, its LICENSE and NOTICE
//
// `make console-vendor` refreshes vendor/echarts with npm (EchartsVersion).
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// Path is where the console is served; "/" redirects here.
const Path = "/console/"

// EchartsVersion is the npm version of echarts vendored in static/vendor.
const EchartsVersion = "6.1.0"

//go:embed static
var static embed.FS

// contentSecurityPolicy confines the page to its own origin: scripts and
// connections only to the API itself. ECharts sets inline styles on its
// tooltip, hence 'unsafe-inline' for styles only.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Handler serves the assets under Path (the request path must start with
// it). index.html is never cached, so a new binary's console is picked up
// at once; the other assets are revalidated.
func Handler() http.Handler {
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(Path, "/"))
		if rest == "" {
			http.Redirect(w, r, Path, http.StatusMovedPermanently)
			return
		}
		rest = path.Clean(rest)
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if rest == "/" || rest == "/index.html" {
			h.Set("Cache-Control", "no-store")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		if st, err := fs.Stat(static, "static"+rest); rest != "/" && (err != nil || st.IsDir()) {
			http.NotFound(w, r) // no directory listings
			return
		}
		if rest == "/index.html" {
			rest = "/" // FileServer redirects index.html to the directory
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/static" + rest
		r2.URL.RawPath = ""
		files.ServeHTTP(w, r2)
	})
}
