package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/console"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/rollup"
)

// ConfigPath is the route telling a client (the console) how this API is
// configured and who is calling: billing zone and today in it, currency,
// which item and method have prices, and the caller's scope.
const ConfigPath = "/platform/cost.alauda.io/v1beta1/config"

// ConfigResponse is the body of ConfigPath.
type ConfigResponse struct {
	// Timezone is the billing zone (IANA name); Today is today in it,
	// YYYY-MM-DD, so that a client in another zone computes the same
	// "this month" as the rollups.
	Timezone string `json:"timezone"`
	Today    string `json:"today"`
	// Currency is the currency of costs.
	Currency string `json:"currency"`
	// Priced lists "Item/Method" pairs with prices (rows of those carry
	// cost); empty without --pricing.
	Priced []string `json:"priced"`
	// Watch tells whether the watch routes are on (--nats-url).
	Watch bool `json:"watch"`
	// GroupKeys are the kept label keys, the groupBy values of the group
	// kinds and the bill (the console's group-by selectors); never null.
	GroupKeys []string `json:"groupKeys"`
	// Scope is the caller's.
	Scope Scope `json:"scope"`
}

// Scope is what a caller may see: everything (Platform) or Projects.
type Scope struct {
	Name     string   `json:"name"`
	Platform bool     `json:"platform"`
	Projects []string `json:"projects"`
}

// consoleRoutes adds the console (static, no authentication: it holds no
// data and asks for a token itself), "/" redirecting to it, and the
// config route (authenticated like the usage routes).
func (s *Server) consoleRoutes(e *gin.Engine, g *gin.RouterGroup) {
	h := console.Handler()
	e.GET("/", func(c *gin.Context) { c.Redirect(http.StatusFound, console.Path) })
	e.GET("/console", gin.WrapH(h))
	e.GET(console.Path+"*file", gin.WrapH(h))
	g.GET(ConfigPath, s.config)
}

func (s *Server) config(c *gin.Context) {
	p, _ := auth.FromContext(c.Request.Context())
	if p == nil {
		abort(c, http.StatusUnauthorized, "unauthenticated")
		return
	}
	now := time.Now
	if s.watch.now != nil {
		now = s.watch.now
	}
	priced := []string{}
	for _, it := range rollup.Items() {
		for _, m := range rollup.Methods() {
			if s.pricing.Has(it, m) {
				priced = append(priced, it.String()+"/"+m.String())
			}
		}
	}
	projects := p.Projects
	if projects == nil || p.Platform {
		projects = []string{}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, ConfigResponse{
		Timezone:  s.loc.String(),
		Today:     now().In(s.loc).Format(time.DateOnly),
		Currency:  s.cfg.Currency,
		Priced:    priced,
		Watch:     s.watch.js != nil,
		GroupKeys: append([]string{}, s.groupKeys...),
		Scope:     Scope{Name: p.Name, Platform: p.Platform, Projects: projects},
	})
}
