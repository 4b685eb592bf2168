package importer

import (
	"bytes"
	"fmt"
	"time"

	"github.com/halapi/halapi/capi"
	"github.com/halapi/halapi/fsm"
)

// Entry bounds: alerts are written in entries of at most this many
// alerts or decisions (one alert with more decisions is one entry).
const (
	maxAlertsPerCmd    = 500
	maxDecisionsPerCmd = 5000
)

// decisionKey identifies a decision without UUID.
type decisionKey struct {
	value, scope, typ, origin, scenario string
	until                               int64
}

func keyOf(d *fsm.Decision) decisionKey {
	return decisionKey{d.Value, d.Scope, d.Type, d.Origin, d.Scenario, d.Until}
}

// Plan compares a Source with the state of f and returns the commands
// that add what is missing, in the order they must be applied (machines,
// bouncers, allowlists before the decisions they may cover, alerts, CAPI
// credentials), and the report. Nothing present is changed: a machine or
// bouncer of the same name is left as it is (a different hash is noted).
func Plan(f *fsm.FSM, src *Source, now time.Time) ([]fsm.Command, Report) {
	var cmds []fsm.Command
	var rep Report
	add := func(t fsm.CmdType, body any) {
		cmds = append(cmds, fsm.Command{Type: t, Time: now.UnixNano(), Body: body})
	}
	for _, s := range src.Skipped {
		rep.Skip(s.Kind, s.Item, s.Reason)
	}

	seenM := map[string]bool{}
	for _, m := range src.Machines {
		if seenM[m.ID] {
			rep.Skip(KindMachines, m.ID, "duplicate machine id")
			continue
		}
		seenM[m.ID] = true
		if old := f.Machine(m.ID); old != nil {
			rep.Present(KindMachines)
			if !bytes.Equal(old.PasswordHash, m.PasswordHash) && m.AuthType == fsm.AuthPassword {
				rep.Notes = append(rep.Notes, fmt.Sprintf("machine %s exists with another password: kept as it is", m.ID))
			}
			continue
		}
		body := &fsm.MachineCreate{Machine: m}
		if err := body.Validate(); err != nil {
			rep.Skip(KindMachines, m.ID, err.Error())
			continue
		}
		rep.Add(KindMachines, 1)
		add(fsm.CmdMachineCreate, body)
	}

	seenB := map[string]bool{}
	for _, b := range src.Bouncers {
		if seenB[b.Name] {
			rep.Skip(KindBouncers, b.Name, "duplicate bouncer name")
			continue
		}
		seenB[b.Name] = true
		if old := f.Bouncer(b.Name); old != nil {
			rep.Present(KindBouncers)
			if old.KeyHash != b.KeyHash {
				rep.Notes = append(rep.Notes, fmt.Sprintf("bouncer %s exists with another key: kept as it is", b.Name))
			}
			continue
		}
		b.Cursor = 0
		body := &fsm.BouncerCreate{Bouncer: b}
		if err := body.Validate(); err != nil {
			rep.Skip(KindBouncers, b.Name, err.Error())
			continue
		}
		rep.Add(KindBouncers, 1)
		add(fsm.CmdBouncerCreate, body)
	}

	for _, al := range src.Allowlists {
		old := f.Allowlist(al.Name)
		have := map[string]bool{}
		if old != nil {
			rep.Present(KindAllowlists)
			for _, it := range old.Items {
				have[it.Value] = true
			}
		}
		if err := (fsm.AllowlistCreate{Name: al.Name, Description: al.Description}).Validate(); err != nil && old == nil {
			rep.Skip(KindAllowlists, al.Name, err.Error())
			for _, it := range al.Items {
				rep.Skip(KindAllowlistItems, al.Name+" "+it.Value, "its list is not carried")
			}
			continue
		}
		var items []fsm.AllowlistItem
		for _, it := range al.Items {
			if have[it.Value] {
				rep.Present(KindAllowlistItems)
				continue
			}
			have[it.Value] = true
			ni := fsm.AllowlistItem{Value: it.Value, Comment: it.Comment, Expiration: it.Expiration}
			if err := (fsm.AllowlistAdd{Name: al.Name, Items: []fsm.AllowlistItem{ni}}).Validate(); err != nil {
				rep.Skip(KindAllowlistItems, al.Name+" "+it.Value, err.Error())
				continue
			}
			items = append(items, ni)
		}
		switch {
		case al.ConsoleManaged && old == nil:
			// console-managed lists are replaced whole by the console
			rep.Add(KindAllowlists, 1)
			rep.Add(KindAllowlistItems, len(items))
			add(fsm.CmdAllowlistReplace, &fsm.AllowlistReplace{Name: al.Name, Description: al.Description, AllowlistID: al.AllowlistID, Items: items})
		case old != nil && old.ConsoleManaged && len(items) > 0:
			for _, it := range items {
				rep.Skip(KindAllowlistItems, al.Name+" "+it.Value, "the list exists here and is managed by the console")
			}
		default:
			if old == nil {
				rep.Add(KindAllowlists, 1)
				add(fsm.CmdAllowlistCreate, &fsm.AllowlistCreate{Name: al.Name, Description: al.Description})
			}
			if len(items) > 0 {
				rep.Add(KindAllowlistItems, len(items))
				add(fsm.CmdAllowlistAdd, &fsm.AllowlistAdd{Name: al.Name, Items: items})
			}
		}
	}

	// what the target holds: active decisions by UUID and by key
	byUUID := map[fsm.UUID]bool{}
	byKey := map[decisionKey]bool{}
	for _, d := range f.Decisions(&fsm.DecisionFilter{IncludeSimulated: true, NoDedup: true}, now) {
		if !d.UUID.IsZero() {
			byUUID[d.UUID] = true
		}
		byKey[keyOf(d)] = true
	}
	var batch []fsm.NewAlert
	batchDecisions := 0
	flush := func() {
		if len(batch) > 0 {
			add(fsm.CmdAlertsCreate, &fsm.AlertsCreate{Alerts: batch})
		}
		batch, batchDecisions = nil, 0
	}
	for _, sa := range src.Alerts {
		var missing []fsm.Decision
		for _, d := range sa.Decisions {
			k := keyOf(&d)
			if (!d.UUID.IsZero() && byUUID[d.UUID]) || byKey[k] {
				rep.Present(KindDecisions)
				continue
			}
			if !d.UUID.IsZero() {
				byUUID[d.UUID] = true
			}
			byKey[k] = true
			d.ID, d.AlertID = 0, 0
			missing = append(missing, d)
		}
		if len(missing) == 0 {
			rep.Present(KindAlerts)
			continue
		}
		if len(batch) >= maxAlertsPerCmd || (batchDecisions > 0 && batchDecisions+len(missing) > maxDecisionsPerCmd) {
			flush()
		}
		a := sa.Alert
		a.ID, a.DecisionIDs = 0, nil
		if err := (fsm.AlertsCreate{Alerts: []fsm.NewAlert{{Alert: a, Decisions: missing}}}).Validate(); err != nil {
			rep.Skip(KindAlerts, fmt.Sprintf("%s %s:%s", a.Scenario, a.Source.Scope, a.Source.Value), err.Error())
			for _, d := range missing {
				rep.Skip(KindDecisions, fmt.Sprintf("%s %s:%s (%s, %s)", d.Type, d.Scope, d.Value, d.Origin, d.Scenario), "its alert is not carried")
			}
			continue
		}
		rep.Add(KindAlerts, 1)
		rep.Add(KindDecisions, len(missing))
		batch = append(batch, fsm.NewAlert{Alert: a, Decisions: missing})
		batchDecisions += len(missing)
	}
	flush()
	// AlertsCreate takes one machine per entry: alerts are attributed
	// with the machine of their first alert only when all agree.
	for i := range cmds {
		if ac, ok := cmds[i].Body.(*fsm.AlertsCreate); ok {
			cmds[i].Body = splitByMachine(ac)
		}
	}
	cmds = expandMachines(cmds)

	if src.CAPI != nil {
		c := capi.Credentials{URL: src.CAPI.URL, Login: src.CAPI.Login, Password: src.CAPI.Password, PapiURL: src.CAPI.PapiURL}
		ci := capi.PlanCredentialsImport(f, c, now.UnixNano())
		switch {
		case ci.Other != "":
			rep.Skip(KindCAPI, src.CAPI.Login, fmt.Sprintf("the cluster has other CAPI credentials (login %s); replace them with `halapi serve --capi-credentials FILE`", ci.Other))
		case ci.Present:
			rep.Present(KindCAPI)
		default:
			rep.Add(KindCAPI, 1)
		}
		for i := range ci.Sets {
			add(fsm.CmdSetConfig, &ci.Sets[i])
		}
	}
	rep.Sort()
	return cmds, rep
}

// machineGroups is an AlertsCreate split into one entry per machine (the
// entry's MachineID owns all its alerts).
type machineGroups []*fsm.AlertsCreate

func splitByMachine(ac *fsm.AlertsCreate) machineGroups {
	var out machineGroups
	idx := map[string]int{}
	for _, na := range ac.Alerts {
		i, ok := idx[na.Alert.MachineID]
		if !ok {
			i = len(out)
			idx[na.Alert.MachineID] = i
			out = append(out, &fsm.AlertsCreate{MachineID: na.Alert.MachineID})
		}
		out[i].Alerts = append(out[i].Alerts, na)
	}
	return out
}

func expandMachines(cmds []fsm.Command) []fsm.Command {
	var out []fsm.Command
	for _, c := range cmds {
		g, ok := c.Body.(machineGroups)
		if !ok {
			out = append(out, c)
			continue
		}
		for _, ac := range g {
			out = append(out, fsm.Command{Type: c.Type, Time: c.Time, Body: ac})
		}
	}
	return out
}
