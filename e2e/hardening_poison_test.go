package e2e

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Cluster-port framing, as a peer speaks it (cluster/mux.go, rpc.go): the
// first byte of a connection names the service, then each request is
// [kind][uint32 length][payload] and each answer [uint32 length][JSON].
const (
	muxRPC   = 2
	rpcApply = 1
)

type forwardAnswer struct {
	Index     uint64 `json:"index"`
	Code      int    `json:"code"`
	Err       string `json:"err"`
	Fail      string `json:"fail"`
	NotLeader bool   `json:"not_leader"`
}

// forwardRaw sends one raw "apply" frame to a node's cluster port, exactly
// as a follower forwarding a write would, and returns the answer.
func forwardRaw(t testing.TB, addr string, payload []byte) forwardAnswer {
	t.Helper()

	c, err := net.DialTimeout("tcp", addr, callTimeout)
	if err != nil {
		t.Fatalf("dial cluster port %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(callTimeout))
	frame := make([]byte, 6, 6+len(payload))
	frame[0] = muxRPC
	frame[1] = rpcApply
	binary.BigEndian.PutUint32(frame[2:], uint32(len(payload)))
	if _, err := c.Write(append(frame, payload...)); err != nil {
		t.Fatalf("write frame: %v", err)
	}
	r := bufio.NewReader(c)
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		t.Fatalf("read answer length: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(l[:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var a forwardAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return a
}

// entry builds a log entry in format 1: [1][type][8-byte time][body].
func entry(typ byte, body string) []byte {
	e := make([]byte, 10, 10+len(body))
	e[0], e[1] = 1, typ
	return append(e, body...)
}

// TestPoisonEntryRefused: a holder of the cluster port (here an insecure
// loopback cluster; with PKI, anyone with a node certificate) forwards
// entries that do not decode or do not validate to the leader. On main such
// an entry was committed unread and made every node panic on apply, again
// after every restart. Now the leader refuses each one, and the cluster
// keeps working through a whole-cluster restart (which replays the log).
func TestPoisonEntryRefused(t *testing.T) {
	c := StartCluster(t, 3, 200)
	leader := c.Leader(c.Node(1))

	poison := []struct {
		name    string
		payload []byte
	}{
		{"garbage", []byte("\x02\x08not a command at all")},
		{"empty", nil},
		{"known type, body not JSON", entry(2, "{this is not json")},
		{"known type, body of the wrong shape", entry(2, `{"machine":"a string"}`)},
		{"unknown type", entry(0x7e, `{}`)},
		{"machine id with a terminal escape", entry(2, `{"machine":{"id":"evil\u001b[2J","auth_type":"password"}}`)},
		{"bouncer without a name", entry(5, `{"bouncer":{"name":""}}`)},
	}
	for _, p := range poison {
		a := forwardRaw(t, leader.ClusterAddr, p.payload)
		if a.NotLeader {
			t.Fatalf("%s: %s is no longer the leader", p.name, leader.ID)
		}
		if a.Index != 0 || (a.Code == 0 && a.Fail == "") {
			t.Fatalf("%s: accepted by the leader: %+v", p.name, a)
		}
		t.Logf("%s: refused (code %d) %s%s", p.name, a.Code, a.Err, a.Fail)
	}

	// The cluster still takes writes, on every node.
	const key = "e2e-poison-bouncer-key-0123456789abcdef"
	addBouncer(t, c.Node(2).Server, "after-poison", key)
	for _, nd := range c.Nodes {
		waitFor(t, convergeTimeout, "bouncer usable on "+nd.ID, func() (bool, string) {
			code := bouncerStatus(t, nd, key)
			return code == http.StatusOK, fmt.Sprint(code)
		})
	}

	// A whole-cluster restart replays the log: no node dies on it.
	stopNodes(c.Nodes...)
	startNodes(c.Nodes...)
	c.WaitStable(clusterFormTimeout, c.Nodes...)
	for _, nd := range c.Nodes {
		if code := bouncerStatus(t, nd, key); code != http.StatusOK {
			t.Fatalf("after the restart, bouncer on %s: %d", nd.ID, code)
		}
	}
}
