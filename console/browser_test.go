package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/testenv"
)

// screenshotsEnv names the directory `make screenshots` writes the
// console's screenshots to; unset, none are taken.
const screenshotsEnv = "COSTMETER_SCREENSHOTS"

// browser is one headless Chromium tab, recording every console error,
// uncaught exception and failed request of the page.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// chromiumPath finds the browser; its absence fails the test, saying how
// to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no headless browser: install chromium (Debian/Ubuntu: apt-get install chromium)")
	return ""
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.NoSandbox, // the tests may run as root (CI containers)
		chromedp.DisableGPU,
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first action starts the tab, which lives as long as the context
	// it ran with: b.ctx, not a child with a deadline.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// listen records what the page must never do.
func (b *browser) listen(ev any) {
	var p string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range e.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			p = "console." + string(e.Type) + ": " + strings.Join(args, " ")
		}
	case *runtime.EventExceptionThrown:
		p = "exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			p += " " + e.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			p = "log: " + e.Entry.Text + " " + e.Entry.URL
		}
	case *network.EventLoadingFailed:
		if !e.Canceled { // the console aborts superseded loads on purpose
			p = "request failed: " + e.ErrorText
		}
	case *network.EventResponseReceived:
		if e.Response != nil && e.Response.Status >= 400 {
			p = fmt.Sprintf("HTTP %d %s", e.Response.Status, e.Response.URL)
		}
	}
	if p != "" {
		b.mu.Lock()
		b.problems = append(b.problems, p)
		b.mu.Unlock()
	}
}

// takeProblems returns and forgets what was recorded.
func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// clean fails the test if the page logged an error or a request failed.
func (b *browser) clean(step string) {
	b.t.Helper()
	if p := b.takeProblems(); len(p) > 0 {
		b.t.Fatalf("%s: console errors or failed requests:\n%s", step, strings.Join(p, "\n"))
	}
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// loads is how many loads the console finished.
func (b *browser) loads() int {
	b.t.Helper()
	return eval[int](b, `Number(document.body.dataset.loads || 0)`)
}

// waitLoad waits until the console finished a load after the prev-th.
func (b *browser) waitLoad(prev int) {
	b.t.Helper()
	testenv.Eventually(b.t, 15*time.Second, "console loaded", func() (bool, string) {
		s := eval[string](b, `(document.body.dataset.loads || '0') + ' ' + (document.body.dataset.busy || '')`)
		var n int
		var busy string
		fmt.Sscan(s, &n, &busy)
		return n > prev && busy == "false", s
	})
}

// navigate opens a console URL and waits for its first load.
func (b *browser) navigate(u string) {
	b.t.Helper()
	b.do(chromedp.Navigate(u))
	b.waitLoad(0)
}

// setControl sets a control's value as a user would and waits for the load.
func (b *browser) setControl(id, value string) {
	b.t.Helper()
	prev := b.loads()
	eval[bool](b, fmt.Sprintf(`(() => { const el = document.getElementById(%q); el.value = %q; el.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, id, value))
	b.waitLoad(prev)
}

func (b *browser) click(id string) {
	b.t.Helper()
	prev := b.loads()
	b.do(chromedp.Click(chromedp.ID(id)))
	b.waitLoad(prev)
}

// view is what the page shows: its URL query, the chart and the table.
type view struct {
	Search string      `json:"search"`
	XAxis  []string    `json:"xAxis"`
	Series []series    `json:"series"`
	Table  [][]string  `json:"table"`
	Exact  []float64   `json:"exact"`
	Total  float64     `json:"total"`
	Info   string      `json:"info"`
	Ctl    ctlSnapshot `json:"ctl"`
}

type series struct {
	ID   string    `json:"id"`
	Name string    `json:"name"`
	Data []float64 `json:"data"`
}

type ctlSnapshot map[string]string

// readView reads the chart's option from ECharts itself and the table
// from the DOM.
func (b *browser) readView() view {
	b.t.Helper()
	js := `(() => {
	  const opt = echarts.getInstanceByDom(document.getElementById('chart')).getOption();
	  const rows = [...document.querySelectorAll('#rows tbody tr')];
	  const ctl = {};
	  for (const el of document.querySelectorAll('#controls select, #controls input, #table select')) ctl[el.id] = el.value;
	  return JSON.stringify({
	    search: location.search,
	    xAxis: opt.xAxis[0].data,
	    series: opt.series.map((s) => ({ id: s.id, name: s.name, data: s.data })),
	    table: rows.map((r) => [...r.cells].map((c) => c.textContent)),
	    exact: rows.map((r) => Number(r.querySelector('td.num')?.title)),
	    total: Number(document.getElementById('total-usage').title),
	    info: document.getElementById('page-info').textContent,
	    ctl,
	  });
	})()`
	var v view
	if err := json.Unmarshal([]byte(eval[string](b, js)), &v); err != nil {
		b.t.Fatal(err)
	}
	return v
}

// query returns the view's URL query.
func (v view) query() url.Values {
	q, _ := url.ParseQuery(strings.TrimPrefix(v.Search, "?"))
	return q
}

func sameData(a, b view) bool {
	ja, _ := json.Marshal([]any{a.XAxis, a.Series, a.Table})
	jb, _ := json.Marshal([]any{b.XAxis, b.Series, b.Table})
	return string(ja) == string(jb)
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv(screenshotsEnv)
	if dir == "" {
		return
	}
	b.chartDrawn()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitTrue waits until a JavaScript expression is true.
func waitTrue(b *browser, expr, what string) {
	b.t.Helper()
	testenv.Eventually(b.t, 15*time.Second, what, func() (bool, string) {
		return eval[bool](b, expr), expr
	})
}

// signIn types a token into the sign-in dialog and submits it.
func (b *browser) signIn(token string) {
	b.t.Helper()
	waitTrue(b, `document.getElementById('login').open && !!document.getElementById('token')`, "sign-in dialog")
	b.do(chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("token-submit")))
}

// url is the page's address.
func (b *browser) url() string {
	b.t.Helper()
	return eval[string](b, `location.href`)
}

// clickText clicks the first element matching css whose text is text and
// waits for the load it starts.
func (b *browser) clickText(css, text string) {
	b.t.Helper()
	prev := b.loads()
	if !eval[bool](b, fmt.Sprintf(`(() => { const el = [...document.querySelectorAll(%q)].find((e) => e.textContent === %q); if (!el) return false; el.click(); return true })()`, css, text)) {
		b.t.Fatalf("no %s with text %q", css, text)
	}
	b.waitLoad(prev)
}

// chartDrawn waits until ECharts finished drawing (and animating) the chart.
func (b *browser) chartDrawn() {
	b.t.Helper()
	testenv.Eventually(b.t, 10*time.Second, "chart drawn", func() (bool, string) {
		return eval[bool](b, `document.getElementById('chart').dataset.finished === 'true'`), "not finished"
	})
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

func sameFloats(a, b []float64) bool {
	return slices.EqualFunc(a, b, near)
}
