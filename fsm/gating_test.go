package fsm

import "testing"

// Every baseline type is applied by this build, and the advertised
// extensions are exactly the supported non-baseline types.
func TestGatingBaselineAndExtensions(t *testing.T) {
	for _, c := range []CmdType{CmdSetJWTKey, CmdMachineCreate, CmdAllowlistReplace, CmdTouch} {
		if !Baseline(c) || !Supported(c) {
			t.Fatalf("type %d: baseline %v supported %v", c, Baseline(c), Supported(c))
		}
	}
	if Baseline(0) || Baseline(CmdAllowlistReplace+1) || Supported(0) {
		t.Fatal("type 0 / past the baseline counted as baseline or supported")
	}
	for _, x := range Extensions() {
		if Baseline(CmdType(x)) || !Supported(CmdType(x)) {
			t.Fatalf("extension %d is baseline or unsupported", x)
		}
	}
}
