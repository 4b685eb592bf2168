package cluster

import (
	"strings"
	"testing"
)

func TestProfilesWarnings(t *testing.T) {
	pi := func(h, src string) *ProfilesInfo { return &ProfilesInfo{Hash: h, Source: src} }
	// all agree: nothing flagged
	ms := []Member{{ID: "n1", Profiles: pi("a", "file")}, {ID: "n2", Profiles: pi("a", "file")}, {ID: "n3"}}
	if w := profilesWarnings(ms, "n1"); len(w) != 0 || ms[0].Profiles.Mismatch || ms[1].Profiles.Mismatch {
		t.Fatalf("agreeing members: %v", w)
	}
	// the leader is the reference, even in a minority
	ms = []Member{{ID: "n1", Profiles: pi("a", "file")}, {ID: "n2", Profiles: pi("b", "default")}, {ID: "n3", Profiles: pi("b", "default")}}
	w := profilesWarnings(ms, "n1")
	if len(w) != 2 || ms[0].Profiles.Mismatch || !ms[1].Profiles.Mismatch || !ms[2].Profiles.Mismatch ||
		!strings.Contains(w[0], "n2 evaluates other profiles (default, b) than the leader n1 (a)") {
		t.Fatalf("leader reference: %v", w)
	}
	// no leader: the majority is the reference
	ms = []Member{{ID: "n1", Profiles: pi("a", "file")}, {ID: "n2", Profiles: pi("b", "file")}, {ID: "n3", Profiles: pi("b", "file")}}
	w = profilesWarnings(ms, "")
	if len(w) != 1 || !ms[0].Profiles.Mismatch || ms[1].Profiles.Mismatch || !strings.Contains(w[0], "than most members (b)") {
		t.Fatalf("majority reference: %v", w)
	}
	// a local file ignored in favour of the replicated set, a set that does not load
	ms = []Member{{ID: "n1", Profiles: &ProfilesInfo{Hash: "r", Source: "replicated", LocalDiffers: true}},
		{ID: "n2", Profiles: &ProfilesInfo{Hash: "r", Source: "replicated", Error: "unknown name Foo"}}}
	w = profilesWarnings(ms, "n1")
	if len(w) != 2 || !strings.Contains(w[0], "n1: its --profiles file") || !strings.Contains(w[1], "n2 cannot load") {
		t.Fatalf("local differs / error: %v", w)
	}
}
