package capi

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/lowprio"
	"github.com/halapi/halapi/lapi/models"
)

// blocklistForceMargin: a blocklist whose oldest stored decision expires
// within pull interval + this is downloaded without If-Modified-Since.
const blocklistForceMargin = 15 * time.Minute

// normalizeScope maps ip/range (any case) to Ip/Range, as the reference
// does for pulled decisions; other scopes are kept as sent.
func normalizeScope(s string) string {
	switch strings.ToLower(s) {
	case "ip":
		return models.ScopeIP
	case "range":
		return models.ScopeRange
	}
	return s
}

// allowFilter drops pulled IP and range values covered by (or covering)
// an active allowlist item. The reference checks only IP values before
// storing and expires covered ranges right after; the end state is the
// same and nothing allowlisted ever reaches a bouncer.
type allowFilter struct {
	ranges []fsm.IPRange
	names  []string
}

func (s *Service) allowFilter(now time.Time) *allowFilter {
	n := now.UnixNano()
	af := &allowFilter{}
	for _, al := range s.f.Allowlists() {
		for _, it := range al.Items {
			if it.Expiration != 0 && it.Expiration < n {
				continue
			}
			r, err := fsm.ParseRange(it.Value)
			if err != nil {
				continue
			}
			af.ranges = append(af.ranges, r)
			af.names = append(af.names, it.Value+" from "+al.Name)
		}
	}
	return af
}

// allowed reports whether a decision may be stored, and why not.
func (af *allowFilter) allowed(scope, value string) (bool, string) {
	if len(af.ranges) == 0 || !fsm.IsIPScope(scope) {
		return true, ""
	}
	r, err := fsm.ParseRange(value)
	if err != nil {
		return true, ""
	}
	for i, a := range af.ranges {
		if a.Related(r) {
			return false, af.names[i]
		}
	}
	return true, ""
}

// pullTemplate is what the decisions of one run of a pulled list share.
type pullTemplate struct{ Origin, Type, Scope, Scenario string }

// pulled is one pulled decision until it is imported: the leader holds a
// whole list of them while it sorts, filters and cuts it, so it is kept
// small — 56 bytes and two pointers (the template is shared), where an
// fsm.Decision is 176 bytes and five. For a 1,000,000-value blocklist
// that is 56 MB instead of 176 MB, which every collection during the pull
// scans.
type pulled struct {
	Range fsm.Prefix // of an IP-scoped value: orders the list (addressOrder)
	Until int64
	Value string
	t     *pullTemplate
}

// decision is the fsm.Decision p stands for (no UUID, no Range: what an
// ImportDecisions entry carries).
func (p *pulled) decision() fsm.Decision {
	return fsm.Decision{Origin: p.t.Origin, Type: p.t.Type, Scope: p.t.Scope, Value: p.Value, Scenario: p.t.Scenario, Until: p.Until}
}

// pullBuilder builds the decisions of one pull. A list comes in runs that
// share a template and a duration (a blocklist is one run): consecutive
// decisions of a run share one template, and its duration is parsed once.
type pullBuilder struct {
	now     time.Time
	last    *pullTemplate // the template of the previous decision
	parsed  bool          // lastDur was parsed into lastD
	lastDur string        // the previous duration text, and its value
	lastD   time.Duration // (<= 0: invalid)
}

func newPullBuilder(now time.Time) *pullBuilder { return &pullBuilder{now: now} }

// decision builds one pulled decision; ok is false for an invalid duration
// or an IP-scoped value that is not an address or CIDR.
func (b *pullBuilder) decision(origin, scenario, typ, scope, value, duration string) (pulled, bool) {
	if !b.parsed || duration != b.lastDur {
		d, err := models.ParseDuration(duration)
		if err != nil {
			d = 0
		}
		b.parsed, b.lastDur, b.lastD = true, duration, d
	}
	d := b.lastD
	if d <= 0 {
		return pulled{}, false
	}
	value = strings.TrimSpace(value)
	scope = normalizeScope(scope)
	if value == "" {
		return pulled{}, false
	}
	var r fsm.IPRange
	if fsm.IsIPScope(scope) {
		var err error
		if r, err = fsm.ParseRange(value); err != nil {
			return pulled{}, false
		}
	}
	if typ == "" {
		typ = "ban"
	}
	k := pullTemplate{Origin: origin, Type: typ, Scope: scope, Scenario: scenario}
	if b.last == nil || *b.last != k {
		b.last = new(pullTemplate)
		*b.last = k
	}
	return pulled{Range: r.Prefix(), Value: value, t: b.last,
		Until: fsm.ClampUntil(b.now.UnixNano(), fsm.AddClamped(b.now.UnixNano(), int64(d)))}, true
}

// pullAlert is the alert owning one pulled batch.
func pullAlert(sourceScope string, added, deleted int, now time.Time) fsm.Alert {
	ns := now.UnixNano()
	return fsm.Alert{Scenario: fmt.Sprintf("update : +%d/-%d IPs", added, deleted), StartAt: ns, StopAt: ns,
		Remediation: true, Source: fsm.Source{Scope: sourceScope}}
}

// importWindow is how many import entries importChunks keeps in flight:
// encoding and validating the next chunks, replicating and applying the
// previous ones overlap (raft groups the entries in flight into one
// batch), instead of one round trip per chunk.
const importWindow = 4

// listChunkBytes also ends a list chunk: values are IPs in practice
// (~15 bytes), but a list of long values must not make a huge entry.
const listChunkBytes = 4 << 20

// supporter is an Applier that tells whether every voter applies a
// command type (cluster.Node): compact list imports need it.
type supporter interface {
	Supports(t fsm.CmdType) bool
}

// importChunk is one import entry: its type, its body for the alert
// (alertID 0: create alert) and its decision count.
type importChunk struct {
	typ  fsm.CmdType
	body func(alertID int64, alert fsm.Alert) any
	n    int
}

// importChunks splits a pulled list into entries, each run of decisions
// sharing origin, type, scope and scenario in address order
// (addressOrder). When every voter applies ImportList, a run goes as
// compact lists of ListChunkSize values (each value once, the UUIDs
// derived from a random seed, one expiry or one per value); else as
// ImportDecisions of ChunkSize decisions, each with its own UUID.
func (s *Service) importChunks(ds []pulled) []importChunk {
	var out []importChunk
	order := addressOrder(ds)
	sp, ok := s.c.(supporter)
	lists := ok && sp.Supports(fsm.CmdImportList)
	for i := 0; i < len(order); {
		j := i
		if lists {
			d0 := &ds[order[i]]
			l := fsm.ImportList{Origin: d0.t.Origin, Type: d0.t.Type, Scope: d0.t.Scope, Scenario: d0.t.Scenario, Until: d0.Until,
				Seed: fsm.UUID(uuid.New()), Values: make([]string, 0, min(s.cfg.ListChunkSize, len(order)-i))}
			size := 0
			for ; j < len(order) && j-i < s.cfg.ListChunkSize && size < listChunkBytes; j++ {
				d := &ds[order[j]]
				if !sameTemplate(d, d0) {
					break
				}
				size += len(d.Value) + 3
				if d.Until != l.Until && l.Untils == nil {
					l.Untils = make([]int64, j-i, cap(l.Values))
					for k := range l.Untils {
						l.Untils[k] = l.Until
					}
				}
				if l.Untils != nil {
					l.Untils = append(l.Untils, d.Until)
				}
				l.Values = append(l.Values, d.Value)
			}
			if l.Untils != nil {
				l.Until = 0
			}
			out = append(out, importChunk{typ: fsm.CmdImportList, n: j - i, body: func(id int64, a fsm.Alert) any {
				b := l
				b.AlertID, b.Alert = id, a
				return b
			}})
		} else {
			chunk := make([]fsm.Decision, 0, min(s.cfg.ChunkSize, len(order)-i))
			for ; j < len(order) && j-i < s.cfg.ChunkSize; j++ {
				d := ds[order[j]].decision()
				d.UUID = fsm.UUID(uuid.New())
				chunk = append(chunk, d)
			}
			out = append(out, importChunk{typ: fsm.CmdImportDecisions, n: len(chunk), body: func(id int64, a fsm.Alert) any {
				return fsm.ImportDecisions{AlertID: id, Alert: a, Decisions: chunk}
			}})
		}
		i = j
	}
	return out
}

// sameTemplate reports whether two pulled decisions share origin, type,
// scope and scenario (one ImportList can carry both).
func sameTemplate(a, b *pulled) bool {
	return a.t == b.t || *a.t == *b.t
}

// addressOrder is the order in which a pulled list is imported: its runs of
// decisions sharing a template where they are, each run ordered by
// address (Range; values that are not addresses first, in their order).
// The order of a list is not observable (one alert, no replacement within
// it) but every node inserts each chunk into its IP index: in address
// order the inserts and the same-value probes walk neighbouring B-tree
// nodes, and a chunk copies few nodes after a publish (1M addresses in
// ImportList entries: 3.3 s of CPU per node scattered, 1.2 s sorted —
// fsm's BenchmarkScalePull).
func addressOrder(ds []pulled) []int32 {
	type key struct {
		p fsm.Prefix
		i int32
	}
	keys := make([]key, len(ds))
	for i := range ds {
		keys[i] = key{ds[i].Range, int32(i)}
	}
	for i := 0; i < len(ds); {
		j := i + 1
		for j < len(ds) && sameTemplate(&ds[i], &ds[j]) {
			j++
		}
		slices.SortFunc(keys[i:j], func(a, b key) int {
			if c := fsm.ComparePrefixes(a.p, b.p); c != 0 {
				return c
			}
			return cmp.Compare(a.i, b.i)
		})
		i = j
	}
	order := make([]int32, len(ds))
	for k := range keys {
		order[k] = keys[k].i
	}
	return order
}

// importList stores decisions under one new alert, in the entries
// importChunks cuts (each far below the 16 MiB bound; a follower's readers
// never wait for an apply: they read a published state). The first entry
// creates the alert; the others, which name it, are applied with up to
// importWindow entries in flight. It returns the alert ID (0 when there
// was nothing to store).
func (s *Service) importList(ctx context.Context, alert fsm.Alert, ds []pulled) (int64, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	chunks := s.importChunks(ds)
	res, err := s.applyChunk(ctx, chunks[0].typ, chunks[0].body(0, alert), chunks[0].n)
	if err != nil {
		return 0, fmt.Errorf("storing pulled decisions: %w", err)
	}
	if len(res.IDs) == 0 {
		return 0, errors.New("storing pulled decisions: no alert id returned")
	}
	id := res.IDs[0]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, importWindow)
	for _, ch := range chunks[1:] {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := s.applyChunk(ctx, ch.typ, ch.body(id, fsm.Alert{}), ch.n); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return id, fmt.Errorf("storing pulled decisions: %w", firstErr)
	}
	return id, nil
}

// chunkAttempts bounds the tries of one import chunk whose apply timed
// out (a loaded node: several big entries in flight).
const chunkAttempts = 4

// applyChunk applies one import chunk. A chunk whose apply timed out may
// still be committed: it is sent again under the same request ID, which
// the FSM applies at most once (the first result is returned).
func (s *Service) applyChunk(ctx context.Context, typ fsm.CmdType, body any, n int) (*fsm.Result, error) {
	var rid [16]byte
	_, _ = rand.Read(rid[:])
	c := fsm.Command{Type: typ, ID: hex.EncodeToString(rid[:]), Body: body}
	for attempt := 1; ; attempt++ {
		res, err := s.applyCmd(ctx, c)
		if err == nil || attempt == chunkAttempts || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return res, err
		}
		s.log.Warn("import chunk timed out: sending it again (applied at most once)", "attempt", attempt, "decisions", n)
	}
}

func (s *Service) pullLoop(ctx context.Context, cl *Client) {
	// A pull parses, sorts and encodes up to millions of decisions on the
	// leader: below the queries' priority (its thread ends with the loop).
	if err := lowprio.LockAndLower(); err != nil {
		s.log.Debug("CAPI pulls run at the node's own priority", "err", err)
	}
	told := false
	for len(s.scenarios()) == 0 {
		if !told {
			s.log.Info("no machine has scenarios yet: the first CAPI pull waits for one")
			told = true
		}
		if sleepCtx(ctx, s.cfg.ScenarioPoll) != nil {
			return
		}
	}
	startup := true
	fails := 0
	first := true
	var delay time.Duration
	for {
		if delay > 0 && sleepCtx(ctx, delay) != nil {
			return
		}
		_, err := s.Pull(ctx, cl, &startup, false)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			s.noteErr("pull", err)
			delay = min(backoff(&s.cfg, fails), s.cfg.PullInterval)
			continue
		}
		fails = 0
		if first {
			delay, first = jittered(s.cfg.PullInterval, s.cfg.PullJitter), false
		} else {
			delay = s.cfg.PullInterval
		}
	}
}

// PullResult summarises one pull.
type PullResult struct {
	Skipped       bool           `json:"skipped,omitempty"`
	Deleted       int            `json:"deleted"`
	New           int            `json:"new"`
	Filtered      int            `json:"filtered"`
	Allowlists    int            `json:"allowlists"`
	Blocklists    map[string]int `json:"blocklists,omitempty"`
	ListsExpired  int            `json:"lists_expired"`
	NotModified   []string       `json:"not_modified,omitempty"`
	DurationMilli int64          `json:"duration_ms"`
}

// recentCommunityPull reports whether community decisions were stored
// less than PullGuard ago (the reference's CAPIPullIsOld).
func (s *Service) recentCommunityPull(now time.Time) bool {
	if s.cfg.PullGuard <= 0 {
		return false
	}
	as := s.f.Alerts(&fsm.AlertFilter{Scope: CommunitySourceScope, Origin: OriginCAPI, Limit: 1}, now)
	return len(as) > 0 && as[0].CreatedAt >= now.Add(-s.cfg.PullGuard).UnixNano()
}

// Pull runs one pull (spec §5.3). startup is sent while *startup is true
// and cleared after the first successful stream call; force skips the
// recent-pull guard and downloads every blocklist.
func (s *Service) Pull(ctx context.Context, cl *Client, startup *bool, force bool) (PullResult, error) {
	start := time.Now()
	now := s.cfg.Now()
	res := PullResult{Blocklists: map[string]int{}}
	if !force && s.recentCommunityPull(now) {
		s.log.Info("last CAPI pull is recent, skipping", "guard", s.cfg.PullGuard)
		res.Skipped = true
		return res, nil
	}
	q := url.Values{}
	if *startup {
		q.Set("startup", "true")
	}
	if !s.cfg.PullCommunity {
		q.Set("community_pull", "false")
	}
	if !s.cfg.PullBlocklists {
		q.Set("additional_pull", "false")
	}
	var data StreamResponse
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DownloadTimeout)
	_, err := cl.Do(dctx, epStream, http.MethodGet, "v3/decisions/stream", q, nil, &data)
	cancel()
	if err != nil {
		return res, err
	}
	*startup = false
	now = s.cfg.Now()

	// 1. deleted
	if res.Deleted, err = s.applyDeleted(ctx, data.Deleted); err != nil {
		return res, err
	}
	// 2. console allowlists
	if data.Links != nil {
		for _, l := range data.Links.Allowlists {
			if err := s.pullAllowlist(ctx, cl, l); err != nil {
				if ctx.Err() != nil || errors.Is(err, errNotLeader) {
					return res, err
				}
				s.log.Warn("cannot update console allowlist", "allowlist", l.Name, "err", err)
				continue
			}
			res.Allowlists++
		}
	}
	allow := s.allowFilter(now)
	// 3. community
	if len(data.New) > 0 {
		var ds []pulled
		seen := map[[3]string]bool{}
		pb := newPullBuilder(now)
		for _, g := range data.New {
			for _, d := range g.Decisions {
				dec, ok := pb.decision(OriginCAPI, g.Scenario, "ban", g.Scope, d.Value, d.Duration)
				if !ok {
					continue
				}
				k := [3]string{dec.t.Scope, dec.Value, dec.t.Scenario}
				if seen[k] {
					continue
				}
				seen[k] = true
				if ok, why := allow.allowed(dec.t.Scope, dec.Value); !ok {
					s.log.Debug("pulled decision allowlisted", "value", dec.Value, "by", why)
					res.Filtered++
					continue
				}
				ds = append(ds, dec)
			}
		}
		if len(ds) > 0 {
			if _, err := s.importList(ctx, pullAlert(CommunitySourceScope, len(ds), res.Deleted, now), ds); err != nil {
				return res, err
			}
		}
		res.New = len(ds)
	} else if s.cfg.PullCommunity {
		s.log.Info("community blocklist: no new entries")
	}
	s.log.Info("community blocklist updated", "added", res.New, "deleted", res.Deleted, "allowlisted", res.Filtered)
	// 4. blocklists: an error aborts the remaining ones
	ps := readPull(s.f)
	if data.Links != nil {
		for _, bl := range data.Links.Blocklists {
			n, expired, err := s.pullBlocklist(ctx, cl, bl, &ps, force, allow)
			if err != nil {
				return res, fmt.Errorf("blocklist %s: %w", bl.Name, err)
			}
			if n < 0 {
				res.NotModified = append(res.NotModified, bl.Name)
				continue
			}
			res.Blocklists[bl.Name] = n
			res.ListsExpired += expired
		}
	}
	ps.LastPull, ps.LastNew, ps.LastDeleted = now.UnixNano(), res.New, res.Deleted
	if err := s.setJSON(ctx, KeyPull, ps); err != nil {
		return res, err
	}
	res.DurationMilli = time.Since(start).Milliseconds()
	s.metrics.invalidateDecisions()
	s.noteOK("pull")
	return res, nil
}

func (s *Service) applyDeleted(ctx context.Context, groups []StreamDeletedGroup) (int, error) {
	var items []fsm.ValueRef
	for _, g := range groups {
		for _, v := range g.Decisions {
			items = append(items, fsm.ValueRef{Scope: g.Scope, Value: v})
		}
	}
	n := 0
	for i := 0; i < len(items); i += s.cfg.ChunkSize {
		end := min(i+s.cfg.ChunkSize, len(items))
		res, err := s.apply(ctx, fsm.CmdExpireByValue, fsm.ExpireByValue{Origin: OriginCAPI, Items: items[i:end]})
		if err != nil {
			return n, fmt.Errorf("expiring deleted community decisions: %w", err)
		}
		n += res.N
	}
	return n, nil
}

func (s *Service) pullAllowlist(ctx context.Context, cl *Client, l AllowlistLink) error {
	if l.Name == "" || l.URL == "" {
		s.log.Warn("allowlist link without name or url: ignored", "name", l.Name)
		return nil
	}
	if l.ID == "" {
		return errors.New("allowlist link has no id")
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DownloadTimeout)
	status, body, _, err := cl.Download(dctx, epAllowlist, l.URL, time.Time{})
	cancel()
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("allowlist download answered http %d", status)
	}
	var items []fsm.AllowlistItem
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var it AllowlistItem
		if err := json.Unmarshal(line, &it); err != nil {
			return fmt.Errorf("allowlist item: %w", err)
		}
		fi := fsm.AllowlistItem{Value: strings.TrimSpace(it.Value), Comment: it.Description}
		if it.CreatedAt != nil {
			fi.CreatedAt = fsm.UnixNano(*it.CreatedAt)
		}
		if it.Expiration != nil && !it.Expiration.IsZero() {
			fi.Expiration = fsm.UnixNano(*it.Expiration)
		}
		items = append(items, fi)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	res, err := s.apply(ctx, fsm.CmdAllowlistReplace, fsm.AllowlistReplace{Name: l.Name, Description: l.Description,
		AllowlistID: l.ID, Items: items})
	if err != nil {
		return err
	}
	s.log.Info("console allowlist updated", "allowlist", l.Name, "items", res.N)
	return nil
}

// shouldForceBlocklist: no stored alert for the list, or its oldest
// decision expires within the next pull interval + 15 min.
func (s *Service) shouldForceBlocklist(name string, now time.Time) bool {
	as := s.f.Alerts(&fsm.AlertFilter{Scope: listsScopePrefix + name, Limit: 1}, now)
	if len(as) == 0 {
		return true
	}
	for _, id := range as[0].DecisionIDs {
		if d := s.f.Decision(id); d != nil {
			return time.Duration(d.Until-now.UnixNano()) < s.cfg.PullInterval+blocklistForceMargin
		}
	}
	return true
}

// pullBlocklist downloads one blocklist and stores it. n is -1 when the
// list was not downloaded (304, other status, incomplete link), else the
// number of decisions stored; expired counts the values dropped from the
// list since the previous download.
func (s *Service) pullBlocklist(ctx context.Context, cl *Client, bl BlocklistLink, ps *pullState, force bool, allow *allowFilter) (n, expired int, err error) {
	if bl.Name == "" || bl.URL == "" || bl.Scope == "" || bl.Duration == "" {
		s.log.Warn("blocklist link without name, url, scope or duration: ignored", "name", bl.Name)
		return -1, 0, nil
	}
	now := s.cfg.Now()
	var ims time.Time
	if !force && !s.shouldForceBlocklist(bl.Name, now) {
		if st, ok := ps.Blocklists[bl.Name]; ok {
			ims, _ = http.ParseTime(st.LastPull)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DownloadTimeout)
	status, body, lastMod, err := cl.Download(dctx, epBlocklist, bl.URL, ims)
	cancel()
	if err != nil {
		return -1, 0, err
	}
	switch status {
	case http.StatusOK:
	case http.StatusNotModified:
		s.log.Info("blocklist not modified", "blocklist", bl.Name, "since", ims.UTC().Format(http.TimeFormat))
		return -1, 0, nil
	default:
		s.log.Warn("blocklist download refused: skipped", "blocklist", bl.Name, "status", status)
		return -1, 0, nil
	}
	now = s.cfg.Now()
	pulledAt := now
	if !lastMod.IsZero() {
		pulledAt = lastMod
	}
	ds, lines, filtered, err := parseBlocklist(body, bl, now, allow)
	if err != nil {
		return -1, 0, err
	}
	st := blocklistState{LastPull: pulledAt.UTC().Format(http.TimeFormat), Count: len(ds)}
	if lines == 0 {
		s.log.Info("blocklist is empty", "blocklist", bl.Name)
	} else if len(ds) > 0 {
		start := time.Now()
		id, err := s.importList(ctx, pullAlert(listsScopePrefix+bl.Name, len(ds), 0, now), ds)
		if err != nil {
			return -1, 0, err
		}
		st.AlertID = id
		// values no longer in the list: expire them now
		res, err := s.apply(ctx, fsm.CmdExpireSet, fsm.ExpireSet{Origin: OriginLists, Scenario: bl.Name, KeepAlertID: id})
		if err != nil {
			return -1, 0, err
		}
		expired = res.N
		s.log.Info("blocklist updated", "blocklist", bl.Name, "added", len(ds), "dropped", expired,
			"allowlisted", filtered, "took", time.Since(start).Round(time.Millisecond).String())
	}
	ps.Blocklists[bl.Name] = st
	if err := s.setJSON(ctx, KeyPull, ps); err != nil {
		return -1, 0, err
	}
	return len(ds), expired, nil
}

// parseBlocklist reads a downloaded blocklist (one value per line): the
// decisions to store, each value once, in address order; lines counts the
// non-empty lines, filtered the values an allowlist dropped.
//
// Duplicates are dropped by sorting, not with a set: a million-entry map
// of strings is a cache miss per line and ~40 MB the collector scans,
// and the list is sorted by address for the import anyway (addressOrder
// then finds it in order). Equal values have equal prefixes, so sorted by
// prefix, then value, they end up side by side.
func parseBlocklist(body []byte, bl BlocklistLink, now time.Time, allow *allowFilter) (ds []pulled, lines, filtered int, err error) {
	estimate := bytes.Count(body, []byte{'\n'}) + 1
	ds = make([]pulled, 0, estimate)
	pb := newPullBuilder(now)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		lines++
		d, ok := pb.decision(OriginLists, bl.Name, bl.Remediation, bl.Scope, string(line), bl.Duration)
		if !ok {
			continue
		}
		ds = append(ds, d)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, 0, err
	}
	sortPulled(ds)
	// equal values have equal ranges: the range (in the record) settles
	// most pairs without reading the value strings
	ds = slices.CompactFunc(ds, func(a, b pulled) bool { return a.Range == b.Range && a.Value == b.Value })
	kept := ds[:0]
	for _, d := range ds {
		if ok, _ := allow.allowed(d.t.Scope, d.Value); !ok {
			filtered++
			continue
		}
		kept = append(kept, d)
	}
	clear(ds[len(kept):]) // no stale strings past the end
	return kept, lines, filtered, nil
}

// comparePulled orders a parsed list by address (fsm.ComparePrefixes), then by
// value: equal values end up next to each other.
func comparePulled(a, b *pulled) int {
	if c := fsm.ComparePrefixes(a.Range, b.Range); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// sortPulled sorts ds by comparePulled. Sorting the 56-byte records
// themselves spent most of its time moving them (11 % of the leader's CPU
// during a 1M pull), so it radix-sorts 16-byte keys (a 64-bit prefix of the
// order and an index) and then moves each record once. The key never
// orders two records against comparePulled; equal keys (the same IPv4
// prefix, IPv6 prefixes that agree on their first 62 bits, values that
// are not addresses) are ordered by comparePulled itself.
func sortPulled(ds []pulled) {
	if len(ds) > math.MaxInt32 {
		slices.SortFunc(ds, func(a, b pulled) int { return comparePulled(&a, &b) })
		return
	}
	keys := make([]sortKey, len(ds))
	for i := range ds {
		k, ok := orderKey(ds[i].Range)
		if !ok { // a family ComparePrefixes knows but orderKey does not
			slices.SortFunc(ds, func(a, b pulled) int { return comparePulled(&a, &b) })
			return
		}
		keys[i] = sortKey{k, int32(i)}
	}
	radixSortKeys(keys)
	// records with equal keys: in comparePulled's order
	for lo := 0; lo < len(keys); {
		hi := lo + 1
		for hi < len(keys) && keys[hi].k == keys[lo].k {
			hi++
		}
		if hi-lo > 1 {
			slices.SortFunc(keys[lo:hi], func(a, b sortKey) int { return comparePulled(&ds[a.i], &ds[b.i]) })
		}
		lo = hi
	}
	// keys[j].i is the record that belongs at j: follow each cycle of the
	// permutation, marking the positions done with -1
	for j := range keys {
		if keys[j].i < 0 || int(keys[j].i) == j {
			continue
		}
		held := ds[j]
		at := j
		for {
			from := int(keys[at].i)
			keys[at].i = -1
			if from == j {
				ds[at] = held
				break
			}
			ds[at] = ds[from]
			at = from
		}
	}
}

// sortKey is a record's place in the order (orderKey) and its index.
type sortKey struct {
	k uint64
	i int32
}

// radixSortKeys sorts ks by k, least significant byte first, skipping
// the bytes every key shares (a list of IPv4 addresses varies in four of
// the eight). Stable.
func radixSortKeys(ks []sortKey) {
	if len(ks) < 2 {
		return
	}
	buf := make([]sortKey, len(ks))
	src, dst := ks, buf
	for shift := uint(0); shift < 64; shift += 8 {
		var count [256]int
		for _, k := range src {
			count[byte(k.k>>shift)]++
		}
		if count[byte(src[0].k>>shift)] == len(src) {
			continue // every key has this byte
		}
		pos := 0
		for b := range count {
			pos, count[b] = pos+count[b], pos
		}
		for _, k := range src {
			b := byte(k.k >> shift)
			dst[count[b]] = k
			count[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &ks[0] {
		copy(ks, src)
	}
}

// orderKey maps a prefix to 64 bits that never order two prefixes against
// fsm.ComparePrefixes: the family's rank in the top two bits, then an IPv4
// start and length in full, or an IPv6 start's first 62 bits. ok is false
// for a family other than 0 (not an address), 4 and 6.
func orderKey(p fsm.Prefix) (k uint64, ok bool) {
	switch p.Fam {
	case 0:
		return 0, true
	case 4:
		return 1<<62 | (p.Start.Lo&0xffffffff)<<8 | uint64(p.Bits), true
	case 6:
		return 2<<62 | p.Start.Hi>>2, true
	}
	return 0, false
}
