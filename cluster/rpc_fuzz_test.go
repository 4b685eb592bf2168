package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/halapi/halapi/fsm"
)

func frame(kind byte, payload []byte) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeFrame(w, kind, payload); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// FuzzReadFrame: the request frames a peer sends on the cluster port.
// Reading never panics, never returns more than the frame claims, and a
// header claiming a huge frame costs no huge allocation.
func FuzzReadFrame(f *testing.F) {
	entry, _ := fsm.Command{Type: fsm.CmdFlush, ID: "r1", Body: fsm.Flush{MaxItems: 5}}.Encode()
	f.Add(frame(rpcApply, entry))
	f.Add(frame(rpcRemove, []byte(`{"id":"n2"}`)))
	f.Add(frame(rpcStatus, nil))
	f.Add([]byte{rpcApply, 0x0f, 0xff, 0xff, 0xff, 1, 2})
	f.Add([]byte{rpcApply, 0x00, 0x10, 0x00, 0x01, 1})
	f.Add([]byte{rpcLeave})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			if _, err := r.ReadByte(); err != nil {
				return
			}
			payload, err := readPayload(r)
			if err != nil {
				return
			}
			if len(payload) > len(data) {
				t.Fatalf("payload of %d bytes from %d input bytes", len(payload), len(data))
			}
		}
	})
}

// FuzzRPCResponse: the answers a peer (maybe an older version) sends back.
func FuzzRPCResponse(f *testing.F) {
	for _, r := range []rpcResponse{
		{Index: 7, IDs: []int64{1, 2}, N: 2},
		{Index: 9, Code: fsm.CodeNotFound, Err: "object not found"},
		{Code: fsm.CodeInvalid, Err: "invalid command: name: is required"},
		{NotLeader: true},
		{Fail: "raft: leadership lost"},
		{Status: &Status{Leader: "n1", Members: []Member{{ID: "n1", State: "alive"}}}},
	} {
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte(`{"index":3,"err":"user 'm': user already exist"}`)) // an old leader: no code
	f.Add([]byte(`{"code":200,"err":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp rpcResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return
		}
		res := resultFromRPC(&resp)
		if (res.Err() == nil) != (res.Code == fsm.CodeOK) {
			t.Fatalf("result %+v: Err() disagrees with Code", res)
		}
		if resp.Err != "" && res.Code == fsm.CodeOK {
			t.Fatalf("an error message came back as success: %+v", resp)
		}
		if resp.Code != fsm.CodeOK && res.Code != resp.Code {
			t.Fatalf("code %v became %v", resp.Code, res.Code)
		}
		// a response a node writes reads back the same
		var l [4]byte
		out, _ := json.Marshal(&resp)
		binary.BigEndian.PutUint32(l[:], uint32(len(out)))
		got, err := readPayload(bufio.NewReader(bytes.NewReader(append(l[:], out...))))
		if err != nil || !bytes.Equal(got, out) {
			t.Fatalf("response frame round trip: %v", err)
		}
	})
}
