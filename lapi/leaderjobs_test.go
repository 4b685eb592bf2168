package lapi

import (
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// WaitJWTKey gives up after its bound without a key and returns as soon
// as the leader job stored one; LeaderJobs names lapi's two jobs.
func TestWaitJWTKeyAndLeaderJobs(t *testing.T) {
	f := fsm.New(nil)
	s, err := New(DefaultConfig(), f, &direct{f: f, now: time.Now}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if s.WaitJWTKey(t.Context(), 50*time.Millisecond) || time.Since(start) < 50*time.Millisecond {
		t.Fatal("a key without a leader job, or no wait")
	}
	jobs := s.LeaderJobs()
	if len(jobs) != 2 || jobs[0].Name != "jwt-key" || jobs[1].Name != "retention" {
		t.Fatalf("jobs %+v", jobs)
	}
	go func() { _ = jobs[0].Run(t.Context()) }()
	if !s.WaitJWTKey(t.Context(), 5*time.Second) {
		t.Fatal("no key after the jwt-key job ran")
	}
}
