package profiles

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/halapi/halapi/lapi/models"
)

//go:embed default_profiles.yaml
var defaultYAML []byte

// DefaultYAML returns the default profiles file (spec §4): two profiles giving
// a 4h ban to remediation alerts on an Ip or a Range, each with on_success: break.
func DefaultYAML() []byte {
	return bytes.Clone(defaultYAML)
}

// DefaultDuration is the duration given to a decision template that has no
// duration.
//
// Deviation from CrowdSec v1.7.6 (improvement): the reference logs "using
// default duration 4h" but leaves the generated decision with an empty
// duration, so every alert matching such a profile fails with a 500 "empty
// duration string". halapi really applies 4h. It is also the fallback of a
// template without duration in a profile with a duration_expr, used when the
// expression fails or does not yield a duration (the reference would again
// produce an empty duration there).
const DefaultDuration = "4h"

// Values of on_success / on_failure / on_error.
const (
	ActionContinue = "continue"
	ActionBreak    = "break"
	ActionApply    = "apply"
	ActionIgnore   = "ignore"
)

// DecisionTemplate is one item of a profile's decisions list.
type DecisionTemplate struct {
	// Type is the decision type (ban, captcha, custom). Always set.
	Type string
	// Duration is the template duration; DefaultDuration when the key was absent.
	Duration string
	// Scope overrides the alert's source scope when non-empty. It is NOT
	// normalised (quirk kept from the reference: "scope: ip" yields "ip").
	Scope string
	// Origin, when HasOrigin, makes the decision origin "crowdsec/<Origin>".
	Origin    string
	HasOrigin bool
	// Simulated marks generated decisions simulated.
	Simulated bool
}

// Profile is one loaded and compiled profile.
type Profile struct {
	Name          string
	Debug         bool
	Filters       []string
	Decisions     []DecisionTemplate
	DurationExpr  string
	OnSuccess     string
	OnFailure     string // validated at load time, no runtime effect (reference quirk)
	OnError       string // not validated: unknown values make errors fatal for the request
	Notifications []string

	filters      []*vm.Program
	durationExpr *vm.Program
}

// profileDoc is the YAML shape of one profile document. Keys are the ones the
// reference accepts; anything else is rejected by strict decoding.
type profileDoc struct {
	Name          string        `yaml:"name"`
	Debug         *bool         `yaml:"debug"`
	Filters       []string      `yaml:"filters"`
	Decisions     []decisionDoc `yaml:"decisions"`
	DurationExpr  string        `yaml:"duration_expr"`
	OnSuccess     string        `yaml:"on_success"`
	OnFailure     string        `yaml:"on_failure"`
	OnError       string        `yaml:"on_error"`
	Notifications []string      `yaml:"notifications"`
}

// decisionDoc is the YAML shape of a decision template: the reference decodes
// it into its Decision model, so exactly these (lower-cased field) keys are
// legal. id, until, uuid, value and scenario are accepted and ignored.
type decisionDoc struct {
	Duration  *string `yaml:"duration"`
	ID        int64   `yaml:"id"`
	Origin    *string `yaml:"origin"`
	Scenario  *string `yaml:"scenario"`
	Scope     *string `yaml:"scope"`
	Simulated *bool   `yaml:"simulated"`
	Type      *string `yaml:"type"`
	Until     string  `yaml:"until"`
	UUID      string  `yaml:"uuid"`
	Value     *string `yaml:"value"`
}

// rawProfile is a decoded document waiting to be compiled.
type rawProfile struct {
	doc    profileDoc
	origin string // "<file>: document N" for error messages
}

// Load reads the profiles file at path, preceded by the documents of
// "<path>.local" when that file exists (the overlay's profiles are evaluated
// first; nothing is merged), and compiles every profile.
func Load(path string) ([]*Profile, error) {
	_, profs, err := ReadFiles(path)
	return profs, err
}

// Parse decodes and compiles a multi-document profiles YAML (one profile per
// document, in evaluation order).
func Parse(data []byte) ([]*Profile, error) {
	raws, err := decodeDocuments(data, "profiles")
	if err != nil {
		return nil, err
	}
	return build(raws)
}

func build(raws []rawProfile) ([]*Profile, error) {
	if len(raws) == 0 {
		return nil, errors.New("zero profiles loaded for LAPI")
	}
	out := make([]*Profile, 0, len(raws))
	for _, r := range raws {
		p, err := compileProfile(r.doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.origin, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// decodeDocuments splits data into YAML documents and strictly decodes each
// into a profileDoc. Empty documents (a stray "---") are skipped.
func decodeDocuments(data []byte, source string) ([]rawProfile, error) {
	// Two decoders walk the same stream in lockstep: the node one gives the
	// profile name for error messages and detects empty documents, the
	// strict one does the real decoding.
	nodes := yaml.NewDecoder(bytes.NewReader(data))
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	var out []rawProfile
	for n := 1; ; n++ {
		var node yaml.Node
		err := nodes.Decode(&node)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		where := fmt.Sprintf("%s: document %d", source, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %s", where, oneLineYAML(err))
		}
		if name := docName(&node); name != "" {
			where += fmt.Sprintf(" (profile %q)", name)
		}
		var doc profileDoc
		if err := strict.Decode(&doc); err != nil {
			return nil, fmt.Errorf("%s: %s", where, oneLineYAML(err))
		}
		if isEmptyDoc(&node) {
			continue
		}
		out = append(out, rawProfile{doc: doc, origin: where})
	}
}

func isEmptyDoc(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func docName(n *yaml.Node) string {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

var (
	yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)
	yamlTypeName     = regexp.MustCompile(` into (\[\])?\*?profiles\.\w+`)
)

// oneLineYAML turns yaml.v3's multi-line errors into one readable line.
func oneLineYAML(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n  ")
	s = strings.TrimPrefix(s, "yaml: ")
	s = yamlUnknownField.ReplaceAllString(s, `unknown key "$1"`)
	s = yamlTypeName.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	return strings.ReplaceAll(s, "\n", " ")
}

func compileProfile(d profileDoc) (*Profile, error) {
	p := &Profile{
		Name:          d.Name,
		Debug:         d.Debug != nil && *d.Debug,
		Filters:       d.Filters,
		DurationExpr:  d.DurationExpr,
		OnSuccess:     d.OnSuccess,
		OnFailure:     d.OnFailure,
		OnError:       d.OnError,
		Notifications: d.Notifications,
	}
	switch p.OnSuccess {
	case "", ActionContinue, ActionBreak:
	default:
		return nil, fmt.Errorf("invalid on_success %q (want continue or break)", p.OnSuccess)
	}
	switch p.OnFailure {
	case "", ActionContinue, ActionBreak, ActionApply:
	default:
		return nil, fmt.Errorf("invalid on_failure %q (want continue, break or apply)", p.OnFailure)
	}
	for i, f := range d.Filters {
		prog, err := compile(f, true)
		if err != nil {
			return nil, fmt.Errorf("filter %d %q: %w", i+1, f, err)
		}
		p.filters = append(p.filters, prog)
	}
	if d.DurationExpr != "" {
		prog, err := compile(d.DurationExpr, false)
		if err != nil {
			return nil, fmt.Errorf("duration_expr %q: %w", d.DurationExpr, err)
		}
		p.durationExpr = prog
	}
	for i, dd := range d.Decisions {
		t := DecisionTemplate{Duration: DefaultDuration}
		// Deviation (improvement): a template without type makes the
		// reference dereference nil at alert time (500 with an empty body
		// for every matching alert). Refuse it up front instead.
		if dd.Type == nil {
			return nil, fmt.Errorf("decision %d: missing type (ban, captcha, ...)", i+1)
		}
		t.Type = *dd.Type
		if dd.Duration != nil {
			t.Duration = *dd.Duration
		}
		// Like the reference, the template duration is only checked when
		// no duration_expr may replace it.
		if p.durationExpr == nil {
			if _, err := models.ParseDuration(t.Duration); err != nil {
				return nil, fmt.Errorf("decision %d: invalid duration %q: %v", i+1, t.Duration, err)
			}
		}
		if dd.Scope != nil {
			t.Scope = *dd.Scope
		}
		if dd.Origin != nil {
			t.Origin, t.HasOrigin = *dd.Origin, true
		}
		t.Simulated = dd.Simulated != nil && *dd.Simulated
		p.Decisions = append(p.Decisions, t)
	}
	return p, nil
}
