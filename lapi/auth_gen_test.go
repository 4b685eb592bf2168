package lapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/fsm"
	"golang.org/x/crypto/bcrypt"
)

// adminAPI is the admin API with lapi's routes only, as the socket serves them.
func adminAPI(s *Server) http.Handler { return admin.Handler(nil, s.AdminRoutes) }

func tokenOf(t *testing.T, r resp) string {
	t.Helper()
	var out struct{ Token string }
	r.json(t, &out)
	if out.Token == "" {
		t.Fatalf("no token in %q", r.body)
	}
	return out.Token
}

func claimsOf(t *testing.T, tok string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A machine's tokens die with its credentials: delete, delete and
// re-create under the same id, and add --force all refuse them at once.
func TestTokenGenerationRevokes(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok)), 200)

	// password change (machines add --force)
	e.expect(e.doAdmin("POST", "/admin/v1/machines", AddMachineRequest{ID: "m", Password: "new-pw", Force: true}), 201)
	r := e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok)), 401)
	if r.hdr.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without the JWT realm")
	}
	e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(tok)), 401)
	tok2 := tokenOf(t, e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": "m", "password": "new-pw"}), 200))
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok2)), 200)

	// delete, then re-create under the same id with the same password
	e.expect(e.doAdmin("DELETE", "/admin/v1/machines/m", nil), 204)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok2)), 401)
	e.expect(e.doAdmin("POST", "/admin/v1/machines", AddMachineRequest{ID: "m", Password: "new-pw"}), 201)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok2)), 401)
	e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(tok2)), 401)
	tok3 := tokenOf(t, e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": "m", "password": "new-pw"}), 200))
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok3)), 200)
	if claimsOf(t, tok3)["gen"] == claimsOf(t, tok2)["gen"] {
		t.Fatal("re-created machine kept its generation")
	}

	// the machine deleting itself
	e.expect(e.do("DELETE", "/v1/watchers/self", nil, withToken(tok3)), 204)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok3)), 401)
}

// Refresh keeps the login time and stops at TokenMaxAge; the agent's way
// out is to log in again.
func TestRefreshMaxAge(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	login := claimsOf(t, tok)["orig_iat"]
	cur := tok
	for i := 0; i < 3; i++ {
		e.advance(30 * time.Minute)
		cur = tokenOf(t, e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(cur)), 200))
		c := claimsOf(t, cur)
		if c["orig_iat"] != login {
			t.Fatalf("refresh moved orig_iat from %v to %v", login, c["orig_iat"])
		}
		if exp := int64(c["exp"].(float64)); exp > int64(login.(float64))+int64((2*time.Hour).Seconds()) {
			t.Fatalf("refreshed token expires past the maximum age: %d", exp)
		}
	}
	// 1h30 after login: the last refresh is capped at 2h after login
	e.advance(29 * time.Minute)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(cur)), 200)
	e.advance(time.Minute)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(cur)), 401)
	e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(cur)), 401)
	fresh := tokenOf(t, e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": "m", "password": "pw-m"}), 200))
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(fresh)), 200)
}

// Tokens from before the upgrade (no gen claim) are honoured until their
// exp while the machine exists, never refreshed.
func TestLegacyToken(t *testing.T) {
	e := newEnv(t)
	e.machine("m")
	legacy, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"id": "m", "exp": e.now().Add(time.Hour).Unix(),
		"orig_iat": e.now().Unix()}).SignedString(e.fsm.JWTKey())
	if err != nil {
		t.Fatal(err)
	}
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(legacy)), 200)
	e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(legacy)), 401)
	if _, err := e.srv.apply(context.Background(), fsm.CmdMachineDelete, fsm.MachineDelete{IDs: []string{"m"}}); err != nil {
		t.Fatal(err)
	}
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(legacy)), 401)
}

func (e *env) doAdmin(method, path string, body any) resp {
	e.t.Helper()
	var s string
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		s = string(data)
	}
	w := newRecorder()
	adminAPI(e.srv).ServeHTTP(w, mustReq(method, path, s))
	return resp{code: w.Code, body: w.Body.String(), hdr: w.Header()}
}

// lagging is a one-node cluster whose local copy lags: writes queued with
// later are applied only when the node confirms with the "leader".
type lagging struct {
	*direct
	mu      sync.Mutex
	pending []fsm.Command
	syncs   int
}

func (l *lagging) later(t fsm.CmdType, body any) {
	l.mu.Lock()
	l.pending = append(l.pending, fsm.Command{Type: t, Body: body})
	l.mu.Unlock()
}

func (l *lagging) SyncLeader(ctx context.Context) error {
	l.mu.Lock()
	cmds := l.pending
	l.pending = nil
	l.syncs++
	l.mu.Unlock()
	for _, c := range cmds {
		if _, err := l.direct.Apply(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (l *lagging) WaitReplicated(context.Context, uint64) error { return nil }

func (l *lagging) syncCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncs
}

// A refusal is confirmed against the leader and re-checked: a bouncer key,
// a machine and a new password this node had not applied yet are accepted.
func TestRefusalConfirmedWithLeader(t *testing.T) {
	e := newEnv(t)
	l := &lagging{direct: e.srv.cluster.(*direct)}
	e.srv.cluster = l

	// bouncer key
	l.later(fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw", KeyHash: HashKey("k1"), AuthType: fsm.AuthAPIKey}})
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("k1")), 200)
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("nope")), 403)
	if n := l.syncCount(); n != 2 {
		t.Fatalf("%d confirmations, want 2 (one per refusal)", n)
	}

	// machine added and validated elsewhere
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
	l.later(fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{ID: "m", PasswordHash: hash, Validated: true, AuthType: fsm.AuthPassword}})
	tok := tokenOf(t, e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": "m", "password": "pw"}), 200))
	e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": "m", "password": "wrong"}), 401)

	// a token from a login elsewhere after a password change this node
	// has not applied yet
	hash2, _ := bcrypt.GenerateFromPassword([]byte("pw2"), 4)
	newer := fsm.Machine{ID: "m", PasswordHash: hash2, Validated: true, AuthType: fsm.AuthPassword}
	tok2, _, err := e.srv.issueToken(&newer, e.now(), "")
	if err != nil {
		t.Fatal(err)
	}
	l.later(fsm.CmdMachineCreate, fsm.MachineCreate{Machine: newer, Force: true})
	before := l.syncCount()
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok2)), 200)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok)), 401)
	if n := l.syncCount() - before; n != 2 {
		t.Fatalf("%d confirmations, want 2", n)
	}
	// accepted requests never confirm
	before = l.syncCount()
	for range 5 {
		e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok2)), 200)
		e.expect(e.do("GET", "/v1/decisions", nil, withKey("k1")), 200)
	}
	if n := l.syncCount() - before; n != 0 {
		t.Fatalf("accepted requests made %d confirmations", n)
	}
}
