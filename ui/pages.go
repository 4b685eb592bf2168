package ui

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/halapi/halapi/capi"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/pki"
)

// pageData is what the layout renders around a page.
type pageData struct {
	Title   string
	Nav     string
	Node    string
	Who     string
	CSRF    string
	Applied uint64
	Flash   *flash
	Audit   bool
	Assets  string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, status int, page string, d *pageData) {
	d.Node = c.cfg.NodeID
	d.Audit = c.cfg.AuditLog != nil
	d.Assets = c.assets
	if d.Applied == 0 {
		d.Applied = c.cfg.FSM.AppliedIndex()
	}
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout.html", d); err != nil {
		c.log.Error("ui: render", "page", page, "err", err)
		c.plainError(w, http.StatusInternalServerError, "render failed")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) renderPage(w http.ResponseWriter, r *http.Request, s *session, nav, title string, data any) {
	d := &pageData{Title: title, Nav: nav, Who: s.who, CSRF: s.csrf, Data: data}
	if !liveFetch(r) {
		d.Flash, _ = s.takeFlash()
	}
	c.render(w, http.StatusOK, nav, d)
}

// liveFetch tells the page script's refresh (after a live event) from a
// navigation: a refresh never takes the flash line or a one-time token
// meant for the page the browser is about to show.
func liveFetch(r *http.Request) bool { return r.Header.Get("X-Halapi-Live") != "" }

// done ends a write: the flash line for the next page, then back to to.
func (c *Console) done(w http.ResponseWriter, r *http.Request, s *session, to string, err error, ok string) {
	if err != nil {
		s.setFlash(oneLine(err.Error()), true)
	} else {
		s.setFlash(oneLine(ok), false)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func ctxFor(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 30*time.Second)
}

// ---- cluster ----

type memberRow struct {
	cluster.Member
	DataRole string
	Lag      int64
	Self     bool
}

type clusterData struct {
	Status   cluster.Status
	Err      string
	Members  []memberRow
	Election *electionSeen
}

// dataRole is a member's role for the page's data-role: raft's, or
// unreachable when gossip or the status call says it is gone.
func dataRole(m cluster.Member, self string, st cluster.Status) string {
	if m.ID == self && strings.EqualFold(st.State, "candidate") {
		return "candidate"
	}
	switch cluster.MemberState(m.State) {
	case cluster.MemberDead, cluster.MemberLeft, cluster.MemberSuspect:
		return "unreachable"
	}
	if m.Error != "" && m.ID != st.Leader {
		return "unreachable"
	}
	return m.Role
}

func (c *Console) clusterPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st, err := c.status(ctx)
	d := clusterData{Status: st, Election: c.lastElection()}
	if err != nil {
		d.Err = err.Error()
	}
	for _, m := range st.Members {
		row := memberRow{Member: m, DataRole: dataRole(m, st.NodeID, st), Self: m.ID == st.NodeID}
		if m.CommitIndex > 0 || m.AppliedIndex > 0 {
			row.Lag = int64(st.CommitIndex) - int64(m.AppliedIndex)
			if row.Lag < 0 {
				row.Lag = 0
			}
		}
		d.Members = append(d.Members, row)
	}
	c.renderPage(w, r, s, "cluster", "Cluster", d)
}

// ---- decisions ----

// PageSize is the decisions page's rows per page.
const PageSize = 100

type decisionRow struct {
	ID                                            int64
	AlertID                                       int64
	Value, Scope, Type, Origin, Scenario, Country string
	Remaining                                     string
	Simulated                                     bool
}

type decisionsData struct {
	Q          string
	Page       int
	Rows       []decisionRow
	Prev, Next string
	Active     int
	Geo        bool
	Err        string
}

// knownOrigins are the decision origins a search word matches as an
// origin rather than a scenario.
var knownOrigins = []string{"crowdsec", "cscli", "cscli-import", "CAPI", "lists", "console", "appsec", "remediation_sync"}

// searchFilter turns the search box into a filter: an IP (decisions
// covering it) or a range (decisions inside it), origin:X or a known
// origin, value:X, else words of the scenario.
func searchFilter(q string) *fsm.DecisionFilter {
	f := &fsm.DecisionFilter{IncludeSimulated: true}
	q = strings.TrimSpace(q)
	switch {
	case q == "":
	case strings.HasPrefix(q, "origin:"):
		f.Origins = []string{strings.TrimSpace(strings.TrimPrefix(q, "origin:"))}
	case strings.HasPrefix(q, "value:"):
		f.Value = strings.TrimSpace(strings.TrimPrefix(q, "value:"))
	default:
		if rg, err := fsm.ParseRange(q); err == nil && looksLikeIP(q) {
			f.IP = &rg
			f.Contains = !strings.Contains(q, "/")
			return f
		}
		for _, o := range knownOrigins {
			if strings.EqualFold(o, q) {
				f.Origins = []string{o}
				return f
			}
		}
		f.ScenariosContaining = []string{strings.ToLower(q)}
	}
	return f
}

func looksLikeIP(q string) bool {
	if p, err := netip.ParsePrefix(q); err == nil {
		return p.IsValid()
	}
	_, err := netip.ParseAddr(q)
	return err == nil
}

func (c *Console) decisionsPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.renderPage(w, r, s, "decisions", "Decisions", c.decisionsData(r.URL.Query().Get("q"), r.URL.Query().Get("page")))
}

func (c *Console) decisionsData(q, pageStr string) decisionsData {
	if len(q) > 256 {
		q = strings.ToValidUTF8(q[:256], "")
	}
	page, _ := strconv.Atoi(pageStr)
	if page < 1 {
		page = 1
	}
	page = min(page, 1_000_000)
	now := c.cfg.Now()
	f := searchFilter(q)
	f.Offset, f.Limit = (page-1)*PageSize, PageSize+1
	ds := c.cfg.FSM.Decisions(f, now)
	d := decisionsData{Q: q, Page: page, Geo: c.cfg.Country != nil}
	d.Active = c.activeCount(now)
	link := func(p int) string {
		v := make([]string, 0, 2)
		if q != "" {
			v = append(v, "q="+urlQuery(q))
		}
		v = append(v, "page="+strconv.Itoa(p))
		return "/ui/decisions?" + strings.Join(v, "&")
	}
	if len(ds) > PageSize {
		ds = ds[:PageSize]
		d.Next = link(page + 1)
	}
	if page > 1 {
		d.Prev = link(page - 1)
	}
	n := now.UnixNano()
	d.Rows = make([]decisionRow, 0, len(ds))
	for _, x := range ds {
		row := decisionRow{ID: x.ID, AlertID: x.AlertID, Value: x.Value, Scope: x.Scope, Type: x.Type, Origin: x.Origin,
			Scenario: x.Scenario, Simulated: x.Simulated,
			Remaining: time.Duration(x.Until - n).Round(time.Second).String()}
		if d.Geo && strings.EqualFold(x.Scope, "ip") {
			row.Country = c.cfg.Country(x.Value)
		}
		d.Rows = append(d.Rows, row)
	}
	return d
}

func (c *Console) addDecision(w http.ResponseWriter, r *http.Request, s *session) {
	req := lapi.AddDecisionRequest{Value: strings.TrimSpace(r.PostFormValue("value")),
		Type: strings.TrimSpace(r.PostFormValue("type")), Duration: strings.TrimSpace(r.PostFormValue("duration")),
		Reason: strings.TrimSpace(r.PostFormValue("reason")), Scope: strings.TrimSpace(r.PostFormValue("scope"))}
	if req.Type == "" {
		req.Type = "ban"
	}
	if req.Reason == "" {
		req.Reason = fmt.Sprintf("manual '%s' from '%s'", req.Type, s.who)
	}
	if req.Value == "" || len(req.Value) > 256 || len(req.Reason) > 1024 || len(req.Type) > 64 || len(req.Duration) > 32 || len(req.Scope) > 64 {
		c.done(w, r, s, "/ui/decisions", fmt.Errorf("a value (≤ 256 characters) is required; reason ≤ 1024, type ≤ 64"), "")
		return
	}
	ctx, cancel := ctxFor(r)
	defer cancel()
	err := c.call(ctx, http.MethodPost, "/decisions", nil, req, nil)
	if err == nil {
		dur := req.Duration
		if dur == "" {
			dur = "4h"
		}
		c.wrote(ctx, s, "decision.add", req.Value, fmt.Sprintf("type=%s duration=%s reason=%s", req.Type, dur, req.Reason))
	}
	c.done(w, r, s, "/ui/decisions?q="+urlQuery(req.Value), err, fmt.Sprintf("Added a %s on %s.", req.Type, req.Value))
}

// unban expires the decisions whose IDs the form names (one button or
// the selection), through the admin API's delete (what `halapi
// decisions delete` sends): one call per value, matching the value and
// the decisions' UUIDs.
func (c *Console) unban(w http.ResponseWriter, r *http.Request, s *session) {
	back := "/ui/decisions"
	if q := r.PostFormValue("q"); q != "" {
		back += "?q=" + urlQuery(q)
	}
	raw := r.PostForm["id"]
	if len(raw) == 0 {
		c.done(w, r, s, back, fmt.Errorf("no decision selected"), "")
		return
	}
	if len(raw) > maxSelection {
		c.done(w, r, s, back, fmt.Errorf("at most %d decisions at once", maxSelection), "")
		return
	}
	type group struct {
		uuids  []string
		byUUID bool
	}
	groups := map[string]*group{}
	var order []string
	missing := 0
	now := c.cfg.Now().UnixNano()
	for _, v := range raw {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			c.done(w, r, s, back, fmt.Errorf("invalid decision id %q", v), "")
			return
		}
		d := c.cfg.FSM.Decision(id)
		if d == nil || !d.Active(now) {
			missing++
			continue
		}
		g := groups[d.Value]
		if g == nil {
			g = &group{byUUID: true}
			groups[d.Value] = g
			order = append(order, d.Value)
		}
		if d.UUID.IsZero() {
			g.byUUID = false // no UUID to tell it apart: every decision on the value
		} else {
			g.uuids = append(g.uuids, d.UUID.String())
		}
	}
	ctx, cancel := ctxFor(r)
	defer cancel()
	total := 0
	var firstErr error
	for _, v := range order {
		g := groups[v]
		q := map[string][]string{"value": {v}}
		if g.byUUID {
			q["uuid"] = g.uuids
		}
		var out struct {
			N string `json:"nbDeleted"`
		}
		if err := c.call(ctx, http.MethodDelete, "/decisions", q, nil, &out); err != nil {
			firstErr = err
			break
		}
		n, _ := strconv.Atoi(out.N)
		total += n
		c.wrote(ctx, s, "decision.delete", v, fmt.Sprintf("deleted=%d", n))
	}
	msg := fmt.Sprintf("Unbanned %d decision(s).", total)
	if missing > 0 {
		msg += fmt.Sprintf(" %d were already gone.", missing)
	}
	c.done(w, r, s, back, firstErr, msg)
}

// ---- alerts ----

type alertRow struct {
	ID                         int64
	Created                    time.Time
	Scenario, Machine, Message string
	Source, Country, AS        string
	SourceValue                string
	Events                     int32
	Decisions                  []decisionRow
	Simulated                  bool
}

type alertsData struct {
	Rows  []alertRow
	Limit int
	Total int
	More  string // link to a longer list, when there is more
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request, s *session) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 500)
	now := c.cfg.Now()
	as := c.cfg.FSM.Alerts(&fsm.AlertFilter{Limit: limit}, now)
	d := alertsData{Limit: limit}
	d.Total, _, _ = c.cfg.FSM.Counts(now)
	if d.Total > len(as) && limit < 500 {
		d.More = "/ui/alerts?limit=" + strconv.Itoa(min(limit*2, 500))
	}
	n := now.UnixNano()
	for _, a := range as {
		src := a.Source.Scope + ":" + a.Source.Value
		if a.Source.Scope == "" {
			src = a.Source.Value
		}
		row := alertRow{ID: a.ID, Created: time.Unix(0, a.CreatedAt).UTC(), Scenario: a.Scenario, Machine: a.MachineID,
			Message: a.Message, Source: src, SourceValue: a.Source.Value, Country: a.Source.Cn, Events: a.EventsCount, Simulated: a.Simulated}
		if a.Source.AsNumber != "" || a.Source.AsName != "" {
			row.AS = strings.TrimSpace(a.Source.AsNumber + " " + a.Source.AsName)
		}
		ds := c.cfg.FSM.AlertDecisions(a)
		for i, x := range ds {
			if i == 20 {
				break
			}
			rem := "expired"
			if x.Until > n {
				rem = time.Duration(x.Until - n).Round(time.Second).String()
			}
			row.Decisions = append(row.Decisions, decisionRow{ID: x.ID, Value: x.Value, Scope: x.Scope, Type: x.Type,
				Origin: x.Origin, Remaining: rem})
		}
		d.Rows = append(d.Rows, row)
	}
	c.renderPage(w, r, s, "alerts", "Alerts", d)
}

// ---- machines and bouncers ----

type listData[T any] struct {
	Rows []T
	Err  string
}

func (c *Console) machinesPage(w http.ResponseWriter, r *http.Request, s *session) {
	var d listData[lapi.MachineView]
	if err := c.call(r.Context(), http.MethodGet, "/machines", nil, nil, &d.Rows); err != nil {
		d.Err = err.Error()
	}
	sort.Slice(d.Rows, func(i, j int) bool { return d.Rows[i].ID < d.Rows[j].ID })
	c.renderPage(w, r, s, "machines", "Machines", d)
}

func (c *Console) bouncersPage(w http.ResponseWriter, r *http.Request, s *session) {
	var d listData[lapi.BouncerView]
	if err := c.call(r.Context(), http.MethodGet, "/bouncers", nil, nil, &d.Rows); err != nil {
		d.Err = err.Error()
	}
	sort.Slice(d.Rows, func(i, j int) bool { return d.Rows[i].Name < d.Rows[j].Name })
	c.renderPage(w, r, s, "bouncers", "Bouncers", d)
}

func (c *Console) validateMachine(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostFormValue("id")
	ctx, cancel := ctxFor(r)
	defer cancel()
	err := c.call(ctx, http.MethodPost, "/machines/"+pathEscape(id)+"/validate", nil, nil, nil)
	if err == nil {
		c.wrote(ctx, s, "machine.validate", id, "")
	}
	c.done(w, r, s, "/ui/machines", err, "Validated machine "+id+".")
}

func (c *Console) deleteMachine(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostFormValue("id")
	ctx, cancel := ctxFor(r)
	defer cancel()
	err := c.call(ctx, http.MethodDelete, "/machines/"+pathEscape(id), nil, nil, nil)
	if err == nil {
		c.wrote(ctx, s, "machine.delete", id, "")
	}
	c.done(w, r, s, "/ui/machines", err, "Deleted machine "+id+".")
}

func (c *Console) deleteBouncer(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PostFormValue("name")
	ctx, cancel := ctxFor(r)
	defer cancel()
	err := c.call(ctx, http.MethodDelete, "/bouncers/"+pathEscape(name), nil, nil, nil)
	if err == nil {
		c.wrote(ctx, s, "bouncer.delete", name, "")
	}
	c.done(w, r, s, "/ui/bouncers", err, "Deleted bouncer "+name+".")
}

// ---- certificates ----

// ExpiringSoon is how close to its end a certificate is flagged.
const ExpiringSoon = 14 * 24 * time.Hour

type certRow struct {
	pki.CertInfo
	Expiring, Expired bool
}

type certsData struct {
	Rows   []certRow
	Err    string
	Reveal *reveal
}

func (c *Console) certsPage(w http.ResponseWriter, r *http.Request, s *session) {
	var d certsData
	var list []pki.CertInfo
	if err := c.call(r.Context(), http.MethodGet, "/pki/certs", nil, nil, &list); err != nil {
		d.Err = err.Error()
	}
	now := c.cfg.Now()
	sort.Slice(list, func(i, j int) bool {
		if list[i].NotAfter.Equal(list[j].NotAfter) {
			return list[i].Serial < list[j].Serial
		}
		return list[i].NotAfter.Before(list[j].NotAfter)
	})
	for _, ci := range list {
		d.Rows = append(d.Rows, certRow{CertInfo: ci, Expired: now.After(ci.NotAfter),
			Expiring: !ci.Revoked && !now.After(ci.NotAfter) && ci.NotAfter.Sub(now) < ExpiringSoon})
	}
	pd := &pageData{Title: "Certificates", Nav: "certs", Who: s.who, CSRF: s.csrf}
	if !liveFetch(r) {
		pd.Flash, d.Reveal = s.takeFlash()
	}
	pd.Data = d
	c.render(w, http.StatusOK, "certs", pd)
}

func (c *Console) revokeCert(w http.ResponseWriter, r *http.Request, s *session) {
	serial := r.PostFormValue("serial")
	if serial == "" || len(serial) > 128 {
		c.done(w, r, s, "/ui/certs", fmt.Errorf("a serial is required"), "")
		return
	}
	ctx, cancel := ctxFor(r)
	defer cancel()
	err := c.call(ctx, http.MethodPost, "/pki/revoke", map[string][]string{"serial": {serial}, "reason": {"revoked from the console by " + s.who}}, nil, nil)
	if err == nil {
		c.wrote(ctx, s, "cert.revoke", serial, "")
	}
	c.done(w, r, s, "/ui/certs", err, "Revoked certificate "+serial+".")
}

func (c *Console) newToken(w http.ResponseWriter, r *http.Request, s *session) {
	role, name := r.PostFormValue("role"), strings.TrimSpace(r.PostFormValue("name"))
	if role != "agent" && role != "bouncer" {
		c.done(w, r, s, "/ui/certs", fmt.Errorf("role must be agent or bouncer"), "")
		return
	}
	if name == "" || len(name) > 128 {
		c.done(w, r, s, "/ui/certs", fmt.Errorf("a name (≤ 128 characters) is required: the certificate's common name"), "")
		return
	}
	ctx, cancel := ctxFor(r)
	defer cancel()
	var out struct {
		Token       string `json:"token"`
		Fingerprint string `json:"fingerprint"`
	}
	err := c.call(ctx, http.MethodPost, "/pki/token", map[string][]string{"role": {role}, "name": {name}}, nil, &out)
	if err != nil {
		c.done(w, r, s, "/ui/certs", err, "")
		return
	}
	c.wrote(ctx, s, "cert.token", role+":"+name, "") // the token itself is never logged
	s.mu.Lock()
	s.reveal = &reveal{Role: role, Name: name, Token: out.Token, Fingerprint: out.Fingerprint}
	s.mu.Unlock()
	c.done(w, r, s, "/ui/certs", nil, "Created a one-time "+role+" token (shown once below).")
}

// ---- CAPI ----

type capiData struct {
	Status  capi.StatusView
	Err     string
	Origins []kv
	TestURL string
}

type kv struct {
	K string
	V int
}

func (c *Console) capiPage(w http.ResponseWriter, r *http.Request, s *session) {
	var d capiData
	if err := c.call(r.Context(), http.MethodGet, "/capi/status", nil, nil, &d.Status); err != nil {
		d.Err = err.Error()
	}
	for k, v := range d.Status.Decisions {
		d.Origins = append(d.Origins, kv{k, v})
	}
	sort.Slice(d.Origins, func(i, j int) bool { return d.Origins[i].K < d.Origins[j].K })
	d.TestURL = capiURL(d.Status.URL)
	c.renderPage(w, r, s, "capi", "CAPI and console", d)
}

// capiURL is the URL the connectivity test reaches.
func capiURL(u string) string {
	if u == "" {
		return "https://api.crowdsec.net/"
	}
	return u
}

// capiTest reaches the Central API from this node (not from the
// browser): the answer's status and time, or the error.
func (c *Console) capiTest(w http.ResponseWriter, r *http.Request, s *session) {
	var st capi.StatusView
	_ = c.call(r.Context(), http.MethodGet, "/capi/status", nil, nil, &st)
	target := capiURL(st.URL)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		c.done(w, r, s, "/ui/capi", err, "")
		return
	}
	start := time.Now()
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		c.done(w, r, s, "/ui/capi", fmt.Errorf("cannot reach %s from node %s: %v", target, c.cfg.NodeID, err), "")
		return
	}
	_ = resp.Body.Close()
	c.done(w, r, s, "/ui/capi", nil, fmt.Sprintf("Reached %s from node %s: HTTP %d in %s.", target, c.cfg.NodeID,
		resp.StatusCode, time.Since(start).Round(time.Millisecond)))
}

// ---- audit ----

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	var rows []AuditEntry
	if c.cfg.AuditLog != nil {
		rows = c.cfg.AuditLog(200)
	}
	c.renderPage(w, r, s, "audit", "Audit trail", rows)
}

// activeCount is the number of active decisions, counted at most once a
// second per applied index (a walk of the whole expiry index).
func (c *Console) activeCount(now time.Time) int {
	idx := c.cfg.FSM.AppliedIndex()
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if c.countIdx == idx && !c.countAt.IsZero() && now.Sub(c.countAt) < time.Second && !now.Before(c.countAt) {
		return c.countN
	}
	_, n, _ := c.cfg.FSM.Counts(now)
	c.countIdx, c.countAt, c.countN = idx, now, n
	return n
}
