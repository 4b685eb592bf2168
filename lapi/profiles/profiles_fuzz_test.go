package profiles

import (
	"os"
	"testing"
)

// FuzzParse: profiles.yaml as an operator (or a config management tool)
// writes it. Loading never panics; what loads has at least one profile,
// each with a name.
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	if b, err := os.ReadFile("testdata/reference_profiles.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"name: a\nfilters:\n - Alert.Remediation == true\ndecisions:\n - type: ban\n   duration: 99999d\non_success: break\n",
		"name: b\nfilters: ['true']\nduration_expr: Sprintf('%dh', 4)\ndecisions:\n - type: captcha\n---\nname: c\nfilters: ['Alert.GetScope() == \"Ip\"']\non_failure: continue\n",
		"name: d\nfilters: [\"GetDecisionsCount(Alert.GetValue()) > 1\"]\ndecisions: [{type: ban, scope: Range, duration: -1h}]\n",
		"---\n", "name: [\n", "decisions: {}\n", "name: x\nfilters: ['1 +']\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse(data)
		if err != nil {
			return
		}
		if len(ps) == 0 {
			t.Fatal("no error and no profile")
		}
	})
}
