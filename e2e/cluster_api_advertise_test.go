package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// TestAPIAdvertiseInMembersAndStatus: a node started with --api-advertise
// is listed with that URL (normalised) by `halapi cluster status` on every
// node and by the members route `halapi agent` reads; the nodes without
// it keep the URL derived from --listen.
func TestAPIAdvertiseInMembersAndStatus(t *testing.T) {
	const key = "e2e-api-advertise-bouncer-key-0123456789"
	c := StartCluster(t, 2, 185)
	n3 := c.newNode(3)
	_, port, err := net.SplitHostPort(n3.Addr)
	if err != nil {
		t.Fatal(err)
	}
	// A name instead of the listen IP: distinct from the derived URL, and
	// still a URL clients on this host can use.
	want := "http://localhost:" + port + "/"
	n3.ExtraArgs = append(c.serveArgs(n3), "--api-advertise", "http://localhost:"+port)
	n3.Start()
	n3.setUp(true)
	c.WaitStable(clusterFormTimeout, c.Nodes...)

	wantURL := map[string]string{"n1": c.Node(1).URL, "n2": c.Node(2).URL, "n3": want}
	for _, nd := range c.Nodes {
		waitFor(t, gossipSettle, nd.ID+"'s cluster status lists every advertised API URL", func() (bool, string) {
			st, err := nd.Status()
			if err != nil {
				return false, err.Error()
			}
			for id, u := range wantURL {
				if m, ok := st.member(id); !ok || m.APIURL != u {
					return false, fmt.Sprintf("%s: %+v, want api_url %s", id, m, u)
				}
			}
			return true, ""
		})
	}

	addBouncer(t, c.Node(1).Server, "adv", key)
	c.WaitCaughtUp(c.Nodes...)
	waitFor(t, gossipSettle, "the members route lists n3 with its --api-advertise URL", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Node(2).URL+"halapi/v1/members", nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var view struct {
			Members []struct {
				ID     string `json:"id"`
				APIURL string `json:"api_url"`
			} `json:"members"`
		}
		if resp.StatusCode != http.StatusOK {
			return false, resp.Status
		}
		if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
			return false, err.Error()
		}
		got := map[string]string{}
		for _, m := range view.Members {
			got[m.ID] = m.APIURL
		}
		for id, u := range wantURL {
			if got[id] != u {
				return false, fmt.Sprintf("members %v, want %v", got, wantURL)
			}
		}
		return true, ""
	})
}

// TestAPIAdvertiseRefusesBadURL: an --api-advertise clients could not use
// is refused at startup, with one line naming the flag, and no state.
func TestAPIAdvertiseRefusesBadURL(t *testing.T) {
	for url, want := range map[string]string{
		"ftp://n1.example:21/":     "--api-advertise",
		"http://0.0.0.0:8080/":     "unspecified address",
		"https://127.0.0.1:8080/":  "this node serves http",
		"http://n1.example:8080/x": "nothing else",
	} {
		dir := filepath.Join(t.TempDir(), "data")
		refusedServe(t, want, "--data-dir", dir, "--plain-http", "--listen", loopbackPort(t, false),
			"--metrics-listen", "", "--api-advertise", url)
		noState(t, dir)
	}
}
