package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
)

// BenchmarkBouncerQuery compares a keep-alive GET straight to a backend
// with the same GET through the agent (both on loopback, in process): the
// difference is the agent's cost per request.
func BenchmarkBouncerQuery(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			_, _ = io.WriteString(w, `{"status":"up"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, `[{"duration":"3h59m","id":1,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"10.1.0.7"}]`)
	}))
	defer backend.Close()
	a, err := New(Config{Servers: []string{backend.URL}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	front := httptest.NewServer(a.Handler())
	defer front.Close()
	for a.Preferred() == "" {
		runtimeGosched()
	}
	for _, c := range []struct{ name, url string }{{"direct", backend.URL}, {"agent", front.URL}} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			u := c.url + "/v1/decisions?ip=10.1.0.7"
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				req.Header.Set("X-Api-Key", "k")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}

func runtimeGosched() { runtime.Gosched() }
