package capi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/capi/capitest"
)

func adminServer(t *testing.T, s *Service) string {
	t.Helper()
	r := mux.NewRouter()
	s.AdminRoutes(r.PathPrefix("/admin/v1").Subrouter())
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL + "/admin/v1"
}

func postJSON(t *testing.T, u string, body any, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// capi enroll: the leader sends cscli's request with the cluster's
// session, the outcome is replicated (and the key is not kept), cscli's
// three outcomes are told apart, and the status shows the enrollment.
func TestConsoleEnroll(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.Cluster = func(context.Context) (string, string, string) { return "n1", "n1", "http://n1/" }
	a := newLocal()
	base := adminServer(t, startService(t, cfg, a, nil))

	// no credentials yet: a clear refusal, nothing sent
	var er EnrollResponse
	if code := postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "k1"}, &er); code != http.StatusConflict {
		t.Fatalf("enroll without credentials: %d %+v", code, er)
	}
	for _, bad := range []EnrollRequest{{}, {Key: strings.Repeat("k", maxEnrollKey+1)}, {Key: "k", Tags: []string{"a\nb"}}} {
		var m map[string]string
		if code := postJSON(t, base+"/capi/enroll", bad, &m); code != http.StatusBadRequest || m["message"] == "" {
			t.Fatalf("bad request %+v: %d %v", bad, code, m)
		}
	}

	storeCreds(t, a, fakeCreds(fake, "lapi"), true)
	fake.Script(capitest.Enroll, capitest.Response{Status: 201, Body: `{"message":"OK"}`})
	if code := postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "key-123", Name: "prod", Tags: []string{"eu", "web"}}, &er); code != 200 ||
		er.Enrollment == nil || er.Enrollment.Result != "enrolled" || !strings.Contains(er.Message, "successfully enrolled") {
		t.Fatalf("enroll: %d %+v", code, er)
	}
	reqs := fake.Requests(capitest.Enroll)
	if len(reqs) != 1 || reqs[0].Method != "POST" || !strings.HasPrefix(reqs[0].Header.Get("Authorization"), "Bearer ") {
		t.Fatalf("enroll requests %+v", reqs)
	}
	var body map[string]any
	_ = json.Unmarshal(reqs[0].Body, &body)
	if body["attachment_key"] != "key-123" || body["name"] != "prod" || body["overwrite"] != false ||
		len(body["tags"].([]any)) != 2 {
		t.Fatalf("enroll body %s", reqs[0].Body)
	}
	// the request (with its key) is gone from the replicated state
	waitFor(t, "request cleared", 5*time.Second, func() bool { return a.f.Config(KeyEnrollRequest) == nil })
	if b := a.f.Config(KeyEnrollment); bytes.Contains(b, []byte("key-123")) {
		t.Fatalf("the enrollment key is kept: %s", b)
	}

	// 200 without --overwrite: already enrolled, as cscli reports it
	fake.Script(capitest.Enroll, capitest.Response{Status: 200, Body: `{"message":"OK"}`})
	if postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "key-123"}, &er); er.Enrollment == nil || er.Enrollment.Result != "already_enrolled" ||
		!strings.Contains(er.Message, "--overwrite") {
		t.Fatalf("already enrolled: %+v", er)
	}
	// with --overwrite a 200 is an enrollment
	fake.Script(capitest.Enroll, capitest.Response{Status: 200, Body: `{"message":"OK"}`})
	if postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "key-123", Overwrite: true}, &er); er.Enrollment.Result != "enrolled" {
		t.Fatalf("overwrite: %+v", er)
	}
	// refused key: failed, 502, reason given
	// (the client logs in again after a 403, twice)
	refused := capitest.Response{Status: 403, Body: `{"message":"invalid attachment key"}`}
	fake.Script(capitest.Enroll, refused, refused, refused)
	if code := postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "bad"}, &er); code != http.StatusBadGateway ||
		er.Enrollment.Result != "failed" || !strings.Contains(er.Message, "403") {
		t.Fatalf("refused: %d %+v", code, er)
	}

	// status: the enrollment outcome; enrolled once CAPI's token carries
	// an organization: after an enrollment the session logs in again, so
	// the next call (here a second enrollment) brings the new claims
	fake.Script(capitest.Enroll, capitest.Response{Status: 201, Body: `{"message":"OK"}`})
	postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "key-123", Name: "prod"}, &er)
	fake.SetClaims(map[string]any{"organization_id": "org-1"})
	logins := fake.Count(capitest.Login)
	fake.Script(capitest.Enroll, capitest.Response{Status: 201, Body: `{"message":"OK"}`})
	postJSON(t, base+"/capi/enroll", EnrollRequest{Key: "key-123", Name: "prod", Tags: []string{"eu"}}, &er)
	if fake.Count(capitest.Login) != logins+1 {
		t.Fatalf("no new login after the enrollment (%d logins before, %d after)", logins, fake.Count(capitest.Login))
	}
	resp, err := http.Get(base + "/capi/status")
	if err != nil {
		t.Fatal(err)
	}
	var st StatusView
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if !st.Enrolled || st.EnrollPending || st.Enrollment == nil || st.Enrollment.Result != "enrolled" || st.Enrollment.Name != "prod" ||
		len(st.Enrollment.Tags) != 1 || st.Enrollment.Login != "lapi" {
		t.Fatalf("status: enrolled %v pending %v %+v", st.Enrolled, st.EnrollPending, st.Enrollment)
	}
}

// capi credentials: CrowdSec's online_api_credentials.yaml fields.
func TestCredentialsExport(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	a := newLocal()
	base := adminServer(t, startService(t, cfg, a, nil))
	resp, err := http.Get(base + "/capi/credentials")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("no credentials: %d", resp.StatusCode)
	}
	c := fakeCreds(fake, "lapi-x")
	storeCreds(t, a, c, true)
	resp, err = http.Get(base + "/capi/credentials")
	if err != nil {
		t.Fatal(err)
	}
	var cf CredentialsFile
	_ = json.NewDecoder(resp.Body).Decode(&cf)
	resp.Body.Close()
	if cf != (CredentialsFile{URL: c.URL, Login: c.Login, Password: c.Password}) {
		t.Fatalf("credentials %+v, want %+v", cf, c)
	}
}
