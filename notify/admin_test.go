package notify

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/halapi/halapi/fsm"
)

type noState struct{}

func (noState) NotifyState(string) (fsm.NotifyState, bool) {
	return fsm.NotifyState{Cursor: 7, Sent: 3}, true
}

// list/inspect show every config with its replicated state and never a
// credential; test sends the sample alert through a plugin started for it
// when this node runs none; bad requests get one JSON message.
func TestAdminRoutes(t *testing.T) {
	pdir := fakePluginDir(t, "fake")
	out := t.TempDir() + "/received"
	files := map[string][]byte{"n.yaml": []byte("type: fake\nname: n1\nout: " + out +
		"\nformat: '{{range .}}{{.Scenario}}{{end}}'\npassword: hunter2\nheaders: {Authorization: Bearer abc}\n")}
	svc := &Service{
		Configs:      func() ([]*Config, []string, error) { return ParseConfigs(files) },
		ProfileNames: func() []string { return []string{"n1", "missing"} }, Store: noState{}, Plugins: PluginOptions{Dir: pdir},
	}
	r := mux.NewRouter()
	svc.AdminRoutes(r)
	do := func(method, path, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w
	}
	w := do("GET", "/notifications", "")
	var lv ListView
	if err := json.Unmarshal(w.Body.Bytes(), &lv); err != nil || w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if len(lv.Notifications) != 1 || !lv.Notifications[0].Active || !lv.Notifications[0].BinaryOK || lv.Notifications[0].Sent != 3 ||
		len(lv.Missing) != 1 || lv.Missing[0] != "missing" {
		t.Fatalf("list %+v", lv)
	}
	if strings.Contains(w.Body.String(), "hunter2") || strings.Contains(w.Body.String(), "Bearer abc") {
		t.Fatalf("list shows a credential: %s", w.Body)
	}
	if w := do("GET", "/notifications/nope", ""); w.Code != 404 || !strings.Contains(w.Body.String(), `"message":"notification 'nope' not found"`) {
		t.Fatalf("unknown: %d %s", w.Code, w.Body)
	}
	if w := do("POST", "/notifications/n1/test", "{bad"); w.Code != 400 {
		t.Fatalf("bad body: %d %s", w.Code, w.Body)
	}
	w = do("POST", "/notifications/n1/test", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "started for the test") {
		t.Fatalf("test: %d %s", w.Code, w.Body)
	}
	got := received(t, out)
	if len(got) != 1 || got[0]["text"] != "test alert" {
		t.Fatalf("received %v", got)
	}
	// a failing plugin is a 502 with the plugin's error
	files["n.yaml"] = append(files["n.yaml"], []byte("fail_first: 5\n")...)
	_ = os.Remove(out + ".attempts")
	if w := do("POST", "/notifications/n1/test", ""); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "fake failure 1") {
		t.Fatalf("failing test: %d %s", w.Code, w.Body)
	}
}
