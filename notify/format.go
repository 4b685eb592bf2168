package notify

import (
	"html"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/Masterminds/sprig/v3"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

// CTIFunc answers the CrowdsecCTI template helper; nil (the default) makes
// it return nil, as the reference does when no CTI key is configured.
// Set it before configs are parsed (the expression helpers own CTI).
var CTIFunc func(ip string) any

// templateFuncs are the reference's: sprig's text functions, then GetMeta,
// CrowdsecCTI, Hostname and HTMLEscape.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"GetMeta": func(a *models.Alert, key string) []string {
			var out []string
			for _, e := range a.Events {
				if e == nil {
					continue
				}
				for _, m := range e.Meta {
					if m != nil && m.Key == key {
						out = append(out, m.Value)
					}
				}
			}
			return out
		},
		"CrowdsecCTI": func(ip string) any {
			if CTIFunc == nil {
				return nil
			}
			return CTIFunc(ip)
		},
		"Hostname":   os.Hostname,
		"HTMLEscape": html.EscapeString,
	}
}

func parseTemplate(format string) (*template.Template, error) {
	return template.New("").Funcs(sprig.TxtFuncMap()).Funcs(templateFuncs()).Parse(format)
}

// Render renders the config's format over alerts (the template's dot is the
// list of alerts, as in the reference).
func (c *Config) Render(alerts []*models.Alert) (string, error) {
	t := c.tmpl
	if t == nil {
		var err error
		if t, err = parseTemplate(c.Format); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, alerts); err != nil {
		return "", err
	}
	return b.String(), nil
}

func rfc3339Nano(ns int64) *string {
	s := time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
	return &s
}

// formatDuration prints a decision's duration as a profile writes it
// ("4h", "1h30m", "90s" -> "1m30s").
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := d.Round(time.Millisecond).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// AlertModel rebuilds, from a stored alert and its decisions, the alert
// the reference hands its plugins: the pushed alert with the LAPI's UUIDs
// and the profile's decisions (durations as written, no IDs, no until).
// With noDecisions the alert is the copy a profile saw before another
// profile gave it decisions.
func AlertModel(a *fsm.Alert, decisions []*fsm.Decision, noDecisions bool) *models.Alert {
	m := &models.Alert{
		Capacity: models.Int32(a.Capacity), CreatedAt: *rfc3339Nano(a.CreatedAt), EventsCount: models.Int32(a.EventsCount),
		Leakspeed: models.Str(a.Leakspeed), MachineID: a.MachineID, Message: models.Str(a.Message),
		Remediation: a.Remediation, Scenario: models.Str(a.Scenario), ScenarioHash: models.Str(a.ScenarioHash),
		ScenarioVersion: models.Str(a.ScenarioVersion), Simulated: models.Bool(a.Simulated),
		StartAt: rfc3339Nano(a.StartAt), StopAt: rfc3339Nano(a.StopAt), UUID: a.UUID,
		Source: &models.Source{AsName: a.Source.AsName, AsNumber: a.Source.AsNumber, Cn: a.Source.Cn, IP: a.Source.IP,
			Latitude: a.Source.Latitude, Longitude: a.Source.Longitude, Range: a.Source.Range,
			Scope: models.Str(a.Source.Scope), Value: models.Str(a.Source.Value)},
		Decisions: []*models.Decision{},
		Events:    []*models.Event{},
	}
	for _, kv := range a.Meta {
		m.Meta = append(m.Meta, &models.MetaItem{Key: kv.Key, Value: kv.Value})
	}
	for _, e := range a.Events {
		ev := &models.Event{Timestamp: rfc3339Nano(e.Timestamp), Meta: models.Meta{}}
		for _, kv := range e.Meta {
			ev.Meta = append(ev.Meta, &models.MetaItem{Key: kv.Key, Value: kv.Value})
		}
		m.Events = append(m.Events, ev)
	}
	if !noDecisions {
		for _, d := range decisions {
			m.Decisions = append(m.Decisions, &models.Decision{
				Duration: models.Str(formatDuration(time.Duration(d.Until - a.StopAt))), Origin: models.Str(d.Origin),
				Scenario: models.Str(d.Scenario), Scope: models.Str(d.Scope), Simulated: models.Bool(d.Simulated),
				Type: models.Str(d.Type), UUID: d.UUID.String(), Value: models.Str(d.Value)})
		}
	}
	return m
}
