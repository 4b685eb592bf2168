package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/halapi/halapi/internal/testharness"
)

// Browser harness: a headless Chromium (Debian's package, installed by
// `make tools`; HALAPI_CHROMIUM names the binary) driven through chromedp
// over its DevTools pipe. Every browser gets a fresh profile: its own user
// data directory and its own HOME, whose NSS database (HOME/.pki/nssdb, the
// certificate store Chromium uses on Linux) trusts exactly the CA files the
// test names (certutil -t C,,) and holds the client certificate (PKCS#12,
// pk12util) it gives, if any. Certificate errors are never ignored: a
// server whose chain does not lead to a trusted CA fails to load, as it
// would for an operator.
//
// Every step is bounded by a context deadline, the browser as a whole by
// browserLifetime; the browser is killed when the test ends (and by the
// kernel if the test binary dies). Screenshots are test artefacts written
// to $HALAPI_ARTIFACTS/<test name>/NN-<step>.png (default e2e/artifacts/,
// ignored by git).

const (
	// browserStartTimeout bounds the browser's start and first blank page.
	browserStartTimeout = 30 * time.Second
	// browserStepTimeout bounds one action (a navigation, a click, a
	// screenshot, a script).
	browserStepTimeout = 15 * time.Second
	// browserLifetime bounds a whole browser: past it every action fails.
	browserLifetime = 5 * time.Minute
)

// chromiumEnv names the browser binary; `make e2e` sets it.
const chromiumEnv = "HALAPI_CHROMIUM"

// chromiumBin returns the browser to run. Without HALAPI_CHROMIUM it looks
// for Debian's chromium or chromium-headless-shell and skips the test when
// there is none; with it (as `make e2e` sets it) a missing browser or NSS
// tool fails the test.
func chromiumBin(t testing.TB) string {
	t.Helper()

	required := os.Getenv(chromiumEnv) != ""
	bin := os.Getenv(chromiumEnv)
	if !required {
		for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-headless-shell"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
				break
			}
		}
		if bin == "" {
			t.Skipf("no Chromium: `make tools` installs Debian's chromium, or set %s", chromiumEnv)
		}
	} else if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (`make tools` installs it)", chromiumEnv, err)
	}
	for _, tool := range []string{"certutil", "pk12util"} {
		if _, err := exec.LookPath(tool); err != nil {
			if required {
				t.Fatalf("%s not found (Debian package libnss3-tools; `make tools` installs it)", tool)
			}
			t.Skipf("%s not found: `make tools` installs Debian's libnss3-tools", tool)
		}
	}
	return bin
}

// browserConfig is what a browser starts with.
type browserConfig struct {
	trustCAs   []string // PEM files the NSS database trusts as CAs
	clientP12  string   // PKCS#12 to import, "" for none
	p12Pass    string
	certCN     string   // subject CN of the client certificate to auto-select
	certFor    []string // origins (https://host:port) it is auto-selected for
	windowW    int
	windowH    int
	screenshot string // tag prefixed to screenshot names ("" for none)
}

// BrowserOption tunes a browser before it starts.
type BrowserOption func(*browserConfig)

// TrustCA makes the browser trust the CA certificate(s) in pemFile.
func TrustCA(pemFile string) BrowserOption {
	return func(c *browserConfig) { c.trustCAs = append(c.trustCAs, pemFile) }
}

// WithClientCert imports the PKCS#12 file into the browser's certificate
// store and makes the browser present the certificate whose subject CN is
// cn, without asking, to the given origins (https://host:port) when they
// request one (Chromium's auto_select_certificate content setting, the
// per-profile form of the AutoSelectCertificateForUrls policy).
func WithClientCert(p12, password, cn string, origins ...string) BrowserOption {
	return func(c *browserConfig) {
		c.clientP12, c.p12Pass, c.certCN = p12, password, cn
		c.certFor = append(c.certFor, origins...)
	}
}

// WithShotPrefix prefixes the screenshot file names of this browser (two
// browsers in one test).
func WithShotPrefix(tag string) BrowserOption {
	return func(c *browserConfig) { c.screenshot = tag }
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	t      testing.TB
	ctx    context.Context // the tab
	cancel func()
	cfg    browserConfig
	dir    string // artefact directory of the test

	mu      sync.Mutex
	shots   int
	console []string // console errors, exceptions and browser log errors
}

// StartBrowser starts a headless Chromium with a fresh profile and waits
// until its first tab is open. It is closed when the test ends.
func StartBrowser(t testing.TB, opts ...BrowserOption) *Browser {
	t.Helper()

	bin := chromiumBin(t)
	cfg := browserConfig{windowW: 1280, windowH: 860}
	for _, o := range opts {
		o(&cfg)
	}

	root := t.TempDir()
	home := filepath.Join(root, "home")
	profile := filepath.Join(root, "profile")
	for _, d := range []string{home, profile} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	setupNSS(t, home, cfg)
	if len(cfg.certFor) > 0 {
		writeAutoSelectPrefs(t, profile, cfg.certCN, cfg.certFor)
	}

	life, lifeCancel := context.WithTimeout(context.Background(), browserLifetime)
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.Env("HOME="+home),
		chromedp.WindowSize(cfg.windowW, cfg.windowH),
		// As root (CI and the dev machines), Chromium refuses to start
		// with its sandbox.
		chromedp.NoSandbox,
		// No GPU on these machines; software rendering for screenshots.
		chromedp.DisableGPU,
		// /dev/shm is large here.
		chromedp.Flag("disable-dev-shm-usage", false),
		chromedp.Flag("lang", "en-US"),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(life, allocOpts...)
	tab, tabCancel := chromedp.NewContext(allocCtx)

	b := &Browser{t: t, ctx: tab, cfg: cfg, dir: artifactsDir(t)}
	b.cancel = func() {
		tabCancel()
		allocCancel()
		lifeCancel()
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.Shot("failed")
			if errs := b.ConsoleErrors(); len(errs) > 0 {
				t.Logf("browser console errors:\n%s", strings.Join(errs, "\n"))
			}
		}
		b.cancel()
	})

	// The first action starts the browser; it must run on the tab context
	// itself (a step context would close the browser when it ends).
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(tab) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start Chromium (%s): %v", bin, err)
		}
	case <-time.After(browserStartTimeout):
		b.cancel()
		t.Fatalf("Chromium (%s) did not start within %s", bin, browserStartTimeout)
	}
	go b.collectConsole()

	return b
}

// setupNSS creates the NSS database Chromium reads from HOME/.pki/nssdb,
// trusting cfg.trustCAs and holding cfg.clientP12.
func setupNSS(t testing.TB, home string, cfg browserConfig) {
	t.Helper()

	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	dbArg := "sql:" + db
	runTool(t, "certutil", "-N", "-d", dbArg, "--empty-password")
	for i, ca := range cfg.trustCAs {
		runTool(t, "certutil", "-A", "-d", dbArg, "-n", fmt.Sprintf("test-ca-%d", i), "-t", "C,,", "-i", ca)
	}
	if cfg.clientP12 != "" {
		runTool(t, "pk12util", "-i", cfg.clientP12, "-d", dbArg, "-W", cfg.p12Pass, "-K", "")
	}
}

func runTool(t testing.TB, name string, args ...string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// writeAutoSelectPrefs writes the profile's Preferences with an
// auto_select_certificate exception per origin: Chromium then presents the
// matching client certificate without a dialog (a headless browser has
// none to show).
func writeAutoSelectPrefs(t testing.TB, profile, cn string, origins []string) {
	t.Helper()

	exceptions := map[string]any{}
	for _, o := range origins {
		exceptions[o+",*"] = map[string]any{
			"setting": map[string]any{"filters": []any{map[string]any{"SUBJECT": map[string]any{"CN": cn}}}},
		}
	}
	prefs := map[string]any{
		"profile": map[string]any{
			"content_settings": map[string]any{
				"exceptions": map[string]any{"auto_select_certificate": exceptions},
			},
		},
	}
	b, err := json.Marshal(prefs)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(profile, "Default")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Preferences"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// artifactsDir is the directory of this test's artefacts:
// $HALAPI_ARTIFACTS (default ./artifacts, i.e. e2e/artifacts) /<test name>.
func artifactsDir(t testing.TB) string {
	t.Helper()

	root := os.Getenv("HALAPI_ARTIFACTS")
	if root == "" {
		root = "artifacts"
	}
	dir := filepath.Join(root, safeName(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artefacts: %v", err)
	}
	return dir
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// collectConsole records the page's console errors, uncaught exceptions
// and browser log errors (a Content-Security-Policy violation is one), but
// not failed loads (network).
func (b *Browser) collectConsole() {
	for m, err := range chromedp.Console(b.ctx) {
		if err != nil {
			return
		}
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException {
			continue
		}
		// "Failed to load resource" lines: the tests check statuses
		// themselves (a 401 can be what they expect).
		if m.Source == "network" {
			continue
		}
		b.mu.Lock()
		b.console = append(b.console, fmt.Sprintf("%s %s: %s (%s:%d)", m.Time.Format("15:04:05.000"), m.Type, m.Text, m.URL, m.Line))
		b.mu.Unlock()
	}
}

// Bind makes the browser's checks fail t (a subtest) instead of the test
// that started it, until the returned func restores it:
//
//	t.Run("step", func(t *testing.T) { defer b.Bind(t)(); ... })
func (b *Browser) Bind(t testing.TB) (restore func()) {
	prev := b.t
	b.t = t
	return func() { b.t = prev }
}

// ConsoleErrors returns the console errors seen so far.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// step runs actions with a step deadline.
func (b *Browser) step(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// browserEval evaluates a JavaScript expression in the page (awaiting a
// promise) with a step deadline and decodes its value into T.
func browserEval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// mustEval is browserEval that fails the test.
func mustEval[T any](b *Browser, expr string) T {
	b.t.Helper()
	v, err := browserEval[T](b, expr)
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Open navigates to u and waits for the page to load; it returns the
// HTTP status of the document.
func (b *Browser) Open(u string) int {
	b.t.Helper()

	status, err := b.TryOpen(u)
	if err != nil {
		b.t.Fatalf("open %s: %v", u, err)
	}
	return status
}

// TryOpen is Open returning the error (e.g. net::ERR_CERT_AUTHORITY_INVALID).
func (b *Browser) TryOpen(u string) (int, error) {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		return 0, err
	}
	if resp == nil {
		return 0, errors.New("no response")
	}
	return int(resp.Status), nil
}

// Location is the page's current URL.
func (b *Browser) Location() string {
	b.t.Helper()
	return mustEval[string](b, `location.href`)
}

// Text is the trimmed text content of the first element matching the CSS
// selector ("" when there is none).
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	return mustEval[string](b, fmt.Sprintf(`(document.querySelector(%s)?.textContent ?? "").trim()`, jsString(sel)))
}

// Count is the number of elements matching the CSS selector.
func (b *Browser) Count(sel string) int {
	b.t.Helper()
	return mustEval[int](b, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(sel)))
}

// Attr is an attribute of the first element matching sel ("" if absent).
func (b *Browser) Attr(sel, name string) string {
	b.t.Helper()
	return mustEval[string](b, fmt.Sprintf(`document.querySelector(%s)?.getAttribute(%s) ?? ""`, jsString(sel), jsString(name)))
}

// Click clicks the first element matching the CSS selector with the mouse
// (after scrolling it into view), as a person would.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	err := retryStale(func() error { return b.step(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)) })
	if err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
}

// ClickAndLoad clicks sel and waits for the navigation it starts (a form
// submission, a link) to load; it returns the document's HTTP status.
//
// An element inside a live region ([data-live], which the console's
// script replaces with a fresh copy after every applied raft index) is
// clicked with one DOM click: a mouse press and release can straddle a
// swap and then click nothing (see notes/uibrowser.md). Elsewhere it is a
// mouse click.
func (b *Browser) ClickAndLoad(sel string) int {
	b.t.Helper()
	live := mustEval[bool](b, fmt.Sprintf(`document.querySelector(%s)?.closest("[data-live]") != null`, jsString(sel)))
	click := chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)
	if live {
		click = chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).click()`, jsString(sel)))
	}
	var status int
	err := retryStale(func() error {
		ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
		defer cancel()
		resp, err := chromedp.RunResponse(ctx, click)
		if err == nil && resp != nil {
			status = int(resp.Status)
		}
		return err
	})
	if err != nil {
		where, _ := browserEval[string](b, `location.href + " (" + document.readyState + ", live region: " + `+
			fmt.Sprintf(`(document.querySelector(%s)?.closest("[data-live]") != null)`, jsString(sel))+` + ")"`)
		b.t.Fatalf("click %s (live region: %v) and load: %v; the page is now %s", sel, live, err, where)
	}
	return status
}

// retryStale runs f again while it fails because the element it found was
// replaced in the meantime (the console's live updates swap whole
// regions): a person would simply click again.
func retryStale(f func() error) error {
	deadline := time.Now().Add(browserStepTimeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || !staleNode(err) {
			return err
		}
		time.Sleep(pollInterval)
	}
}

func staleNode(err error) bool {
	m := err.Error()
	return strings.Contains(m, "Could not find node with given id") || strings.Contains(m, "Node is detached") ||
		strings.Contains(m, "No node with given id")
}

// Type clears the field matching sel and types value into it.
func (b *Browser) Type(sel, value string) {
	b.t.Helper()
	mustEval[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) throw new Error("no element"); e.value = ""; return true })()`, jsString(sel)))
	if err := b.step(chromedp.SendKeys(chromedp.CSS(sel), value, chromedp.NodeVisible)); err != nil {
		b.t.Fatalf("type into %s: %v", sel, err)
	}
}

// Select sets a <select> (or any field) to value and fires its change event.
func (b *Browser) Select(sel, value string) {
	b.t.Helper()
	mustEval[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) throw new Error("no element"); e.value = %s; e.dispatchEvent(new Event("change", {bubbles: true})); return e.value === %s })()`,
		jsString(sel), jsString(value), jsString(value)))
}

// WaitJS polls the boolean JavaScript expression cond until it is true,
// failing the test after timeout with the last value of describe (a
// JavaScript expression giving a string, "" for none).
func (b *Browser) WaitJS(timeout time.Duration, what, cond, describe string) {
	b.t.Helper()
	if describe == "" {
		describe = `document.title`
	}
	expr := fmt.Sprintf(`(() => { try { return [!!(%s), String(%s)] } catch (e) { return [false, String(e)] } })()`, cond, describe)
	err := testharness.Poll(context.Background(), timeout, func() (bool, string) {
		v, err := browserEval[[]any](b, expr)
		if err != nil {
			return false, err.Error()
		}
		if len(v) != 2 {
			return false, fmt.Sprint(v)
		}
		ok, _ := v[0].(bool)
		return ok, fmt.Sprint(v[1])
	})
	if err != nil {
		b.Shot("timeout")
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// WaitSelector waits until an element matches the CSS selector.
func (b *Browser) WaitSelector(timeout time.Duration, sel string) {
	b.t.Helper()
	b.WaitJS(timeout, "element "+sel+" present", fmt.Sprintf(`document.querySelector(%s) !== null`, jsString(sel)), `location.href`)
}

// Shot saves a full-page PNG screenshot as NN-<name>.png in the test's
// artefact directory and returns its path ("" if it failed: a screenshot
// never fails the test).
func (b *Browser) Shot(name string) string {
	png, err := b.capture()
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.mu.Lock()
	b.shots++
	n := b.shots
	b.mu.Unlock()
	prefix := ""
	if b.cfg.screenshot != "" {
		prefix = b.cfg.screenshot + "-"
	}
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s%s.png", n, prefix, safeName(name)))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: %s", p)
	return p
}

// ShotTo saves a PNG screenshot of the page's top, down to the bottom of
// the element matching sel plus a margin (no empty viewport below), at
// path: the images of the documentation.
func (b *Browser) ShotTo(path, sel string) {
	b.t.Helper()
	bottom := mustEval[float64](b, fmt.Sprintf(`document.querySelector(%s).getBoundingClientRect().bottom + window.scrollY`, jsString(sel)))
	width := mustEval[float64](b, `document.documentElement.clientWidth`)
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{
		Format: page.CaptureScreenshotFormatPng,
		Clip:   &page.Viewport{Width: width, Height: bottom + 24, Scale: 1},
	})
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", path, err)
	}
	if err := os.WriteFile(path, res.Data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s", path)
}

func (b *Browser) capture() ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
