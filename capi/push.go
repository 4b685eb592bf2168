package capi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Origins and source scopes of pulled data.
const (
	OriginCAPI           = "CAPI"
	OriginLists          = "lists"
	OriginCscli          = "cscli"
	CommunitySourceScope = "crowdsecurity/community-blocklist"
	listsScopePrefix     = "lists:"
)

// Scenario trust levels.
const (
	TrustCertified = "certified"
	TrustCustom    = "custom"
	TrustTainted   = "tainted"
	TrustManual    = "manual"
)

// ScenarioTrust classifies an alert as CrowdSec does: no hash → custom,
// no version (or "?") → tainted, else certified; a first decision of
// origin exactly "cscli" makes it manual.
func ScenarioTrust(a *fsm.Alert, decisions []*fsm.Decision) string {
	trust := TrustCertified
	switch {
	case a.ScenarioHash == "":
		trust = TrustCustom
	case a.ScenarioVersion == "" || a.ScenarioVersion == "?":
		trust = TrustTainted
	}
	if len(decisions) > 0 && decisions[0].Origin == OriginCscli {
		trust = TrustManual
	}
	return trust
}

// ShouldShare applies the sharing rules (spec §4.1).
func ShouldShare(a *fsm.Alert, decisions []*fsm.Decision, sharing bool, o ConsoleOptions) bool {
	if !sharing || a.Simulated {
		return false
	}
	switch ScenarioTrust(a, decisions) {
	case TrustManual:
		return o.ShareManualDecisions
	case TrustTainted:
		return o.ShareTainted
	case TrustCustom:
		return o.ShareCustom
	}
	return true
}

// IsPulled reports whether an alert was created by a CAPI or blocklist
// pull (never pushed back).
func IsPulled(a *fsm.Alert, decisions []*fsm.Decision) bool {
	if a.Source.Scope == CommunitySourceScope || strings.HasPrefix(a.Source.Scope, listsScopePrefix) {
		return a.MachineID == ""
	}
	for _, d := range decisions {
		if d.Origin == OriginCAPI || d.Origin == OriginLists {
			return true
		}
	}
	return false
}

func rfc3339(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

// formatDuration prints a duration the way CrowdSec users write them
// ("4h", "1h30m", "90s" → "1m30s").
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// BuildSignal turns a stored alert and its decisions into a signal
// (spec §4.2).
func BuildSignal(a *fsm.Alert, decisions []*fsm.Decision, trust string, shareContext bool) Signal {
	sg := Signal{
		UUID: a.UUID, MachineID: a.MachineID, Scenario: a.Scenario, ScenarioHash: a.ScenarioHash,
		ScenarioVersion: a.ScenarioVersion, ScenarioTrust: trust, Message: a.Message,
		StartAt: rfc3339(a.StartAt), StopAt: rfc3339(a.StopAt),
		Source: SignalSource{Scope: a.Source.Scope, Value: a.Source.Value, IP: a.Source.IP, Range: a.Source.Range,
			AsNumber: a.Source.AsNumber, AsName: a.Source.AsName, Cn: a.Source.Cn,
			Latitude: a.Source.Latitude, Longitude: a.Source.Longitude},
	}
	if trust == TrustManual {
		// cscli sets created_at itself; agents do not (omitted)
		sg.CreatedAt = rfc3339(a.CreatedAt)
	}
	for _, d := range decisions {
		dur := time.Duration(d.Until - a.StopAt)
		sg.Decisions = append(sg.Decisions, SignalDecision{Duration: formatDuration(dur), Origin: d.Origin,
			Scenario: d.Scenario, Scope: d.Scope, Type: d.Type, Value: d.Value, UUID: d.UUID.String(), Simulated: d.Simulated})
	}
	if shareContext {
		sg.Context = []SignalContext{}
		for _, m := range a.Meta {
			sg.Context = append(sg.Context, SignalContext{Key: m.Key, Value: m.Value})
		}
	}
	return sg
}

// loadCursor reads the push cursor; without one (first leadership with
// CAPI) it starts after the newest stored alert, as the reference only
// pushes alerts received while it runs.
func (s *Service) loadCursor(ctx context.Context) (pushState, error) {
	if p, ok := readPush(s.f); ok {
		return p, nil
	}
	p := pushState{Cursor: s.f.LastAlertID()}
	if err := s.setJSON(ctx, KeyPush, p); err != nil {
		return p, err
	}
	return p, nil
}

func (s *Service) pushLoop(ctx context.Context, cl *Client) {
	var st pushState
	for {
		var err error
		if st, err = s.loadCursor(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		s.noteErr("push", err)
		if sleepCtx(ctx, s.cfg.WatchInterval) != nil {
			return
		}
	}
	t := time.NewTimer(jittered(s.cfg.PushInterval, s.cfg.PushJitter))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(s.cfg.PushInterval)
		var err error
		st, err = s.pushOnce(ctx, cl, st)
		if err != nil {
			s.noteErr("push", err)
		}
	}
}

// pushOnce sends every pending signal in batches, advancing the
// replicated cursor after each accepted batch. A failed batch stays
// pending (retried on the next run) unless CAPI refused its content.
func (s *Service) pushOnce(ctx context.Context, cl *Client, st pushState) (pushState, error) {
	batch := s.cfg.SignalBatch
	for ctx.Err() == nil {
		if !s.cfg.Sharing {
			if last := s.f.LastAlertID(); last > st.Cursor {
				next := st
				next.Cursor = last
				if err := s.setJSON(ctx, KeyPush, next); err != nil {
					return st, err
				}
				st = next
			}
			return st, nil
		}
		alerts := s.f.AlertsAfter(st.Cursor, 4*batch)
		if len(alerts) == 0 {
			return st, nil
		}
		last := st.Cursor
		signals := make([]Signal, 0, batch)
		for _, a := range alerts {
			last = a.ID
			ds := s.f.AlertDecisions(a)
			if IsPulled(a, ds) || !ShouldShare(a, ds, s.cfg.Sharing, s.cfg.Console) {
				continue
			}
			signals = append(signals, BuildSignal(a, ds, ScenarioTrust(a, ds), s.cfg.Console.ShareContext))
			if len(signals) == batch {
				break
			}
		}
		next := st
		next.Cursor = last
		if len(signals) > 0 {
			bctx, cancel := context.WithTimeout(ctx, s.cfg.SignalTimeout)
			_, err := cl.Do(bctx, epSignals, http.MethodPost, "v3/signals", nil, signals, nil)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return st, ctx.Err()
				}
				if Temporary(err) {
					return st, err // retried on the next run
				}
				// CAPI refused the content: retrying would loop forever
				s.log.Warn("CAPI refused a signal batch; skipping it", "signals", len(signals), "err", err)
			} else {
				next.LastPush = s.cfg.Now().UnixNano()
				next.Pushed += int64(len(signals))
				s.metrics.signals.Add(float64(len(signals)))
				s.log.Debug("signals pushed", "count", len(signals), "cursor", last)
			}
		}
		if err := s.setJSON(ctx, KeyPush, next); err != nil {
			// keep the advance in memory: the next write persists it
			return next, err
		}
		st = next
		if len(signals) > 0 {
			s.noteOK("push")
		}
	}
	return st, ctx.Err()
}
