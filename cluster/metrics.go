package cluster

import (
	"github.com/halapi/halapi/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

type nodeMetrics struct {
	n                                               *Node
	leader                                          prometheus.Gauge
	forwardedOut                                    prometheus.Counter
	forwardRPCs                                     prometheus.Counter
	forwardedIn                                     prometheus.Counter
	freshChecks, freshRPCs                          prometheus.Counter
	applyLatency                                    prometheus.Histogram
	entries, entryBytes                             *prometheus.CounterVec
	touchesRelayed                                  prometheus.Counter
	forwardsAbandoned                               prometheus.Counter
	term, commit, applied, lastLog, peers, lastSnap *prometheus.Desc
	applyBatches, applyEntries                      *prometheus.Desc
}

func newNodeMetrics(n *Node) *nodeMetrics {
	return &nodeMetrics{
		n:      n,
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "halapi_raft_leader", Help: "1 when this node is the raft leader."}),
		forwardedOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_forwarded_writes_total",
			Help: "Writes this node forwarded to the leader."}),
		forwardRPCs: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_forward_rpcs_total",
			Help: "RPCs that carried this node's forwarded writes to the leader (fewer than the writes: the writes that wait behind one in flight go together)."}),
		forwardedIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_forwarded_writes_received_total",
			Help: "Writes forwarded to this node by followers."}),
		freshChecks: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_freshness_checks_total",
			Help: "Refusals this node confirmed against the leader's commit index before answering."}),
		freshRPCs: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_freshness_leader_rpcs_total",
			Help: "Commit-index round trips to the leader for those confirmations (coalesced)."}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "halapi_apply_duration_seconds",
			Help:    "Time from submitting a write to having it applied on this node.",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5}}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_raft_entries_appended_total",
			Help: "Raft log entries this node appended as the leader, by command (summed over the nodes: the cluster's entries)."}, []string{"command"}),
		entryBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_raft_entry_bytes_appended_total",
			Help: "Bytes of the raft log entries this node appended as the leader, by command."}, []string{"command"}),
		touchesRelayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_touches_relayed_total",
			Help: "Batches of touches (cursors, last pulls, heartbeats) this node relayed to the leader instead of writing them."}),
		forwardsAbandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_forwards_abandoned_total",
			Help: "Forwarded writes and removals this node abandoned and retried because the leader changed while they were in flight."}),
		term:     prometheus.NewDesc("halapi_raft_term", "Current raft term.", nil, nil),
		commit:   prometheus.NewDesc("halapi_raft_commit_index", "Raft commit index.", nil, nil),
		applied:  prometheus.NewDesc("halapi_raft_applied_index", "Index applied to this node's state.", nil, nil),
		lastLog:  prometheus.NewDesc("halapi_raft_last_log_index", "Last raft log index.", nil, nil),
		peers:    prometheus.NewDesc("halapi_raft_peers", "Servers in the raft configuration.", nil, nil),
		lastSnap: prometheus.NewDesc("halapi_raft_last_snapshot_index", "Index of the last snapshot.", nil, nil),
		applyBatches: prometheus.NewDesc("halapi_fsm_apply_batches_total",
			"Batches of committed raft entries this node's state machine applied (one publish each).", nil, nil),
		applyEntries: prometheus.NewDesc("halapi_fsm_applied_entries_total",
			"Raft entries in those batches: divided by the batches, the group commit achieved.", nil, nil),
	}
}

func (m *nodeMetrics) setLeader(b bool) {
	if b {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// Describe implements prometheus.Collector.
func (m *nodeMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.leader.Describe(ch)
	m.forwardedOut.Describe(ch)
	m.forwardRPCs.Describe(ch)
	m.forwardedIn.Describe(ch)
	m.freshChecks.Describe(ch)
	m.freshRPCs.Describe(ch)
	m.applyLatency.Describe(ch)
	m.entries.Describe(ch)
	m.entryBytes.Describe(ch)
	m.touchesRelayed.Describe(ch)
	m.forwardsAbandoned.Describe(ch)
	for _, d := range []*prometheus.Desc{m.term, m.commit, m.applied, m.lastLog, m.peers, m.lastSnap, m.applyBatches, m.applyEntries} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *nodeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.leader.Collect(ch)
	m.forwardedOut.Collect(ch)
	m.forwardRPCs.Collect(ch)
	m.forwardedIn.Collect(ch)
	m.freshChecks.Collect(ch)
	m.freshRPCs.Collect(ch)
	m.applyLatency.Collect(ch)
	m.entries.Collect(ch)
	m.entryBytes.Collect(ch)
	m.touchesRelayed.Collect(ch)
	m.forwardsAbandoned.Collect(ch)
	st := m.n.raft.Stats()
	g := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	g(m.term, statU(st, "term"))
	g(m.commit, statU(st, "commit_index"))
	g(m.applied, m.n.FSM.AppliedIndex())
	g(m.lastLog, statU(st, "last_log_index"))
	g(m.peers, statU(st, "num_peers")+1)
	g(m.lastSnap, statU(st, "last_snapshot_index"))
	batches, entries := m.n.FSM.ApplyCounts()
	ch <- prometheus.MustNewConstMetric(m.applyBatches, prometheus.CounterValue, float64(batches))
	ch <- prometheus.MustNewConstMetric(m.applyEntries, prometheus.CounterValue, float64(entries))
}

// Collector exposes the node's raft and forwarding metrics.
func (n *Node) Collector() prometheus.Collector { return n.metrics }

// appended counts one entry the leader appends.
func (m *nodeMetrics) appended(entry []byte) {
	kind := "unknown"
	if len(entry) > 1 {
		kind = commandName(fsm.CmdType(entry[1]))
	}
	m.entries.WithLabelValues(kind).Inc()
	m.entryBytes.WithLabelValues(kind).Add(float64(len(entry)))
}

// commandName is the metric label of a command type.
func commandName(t fsm.CmdType) string {
	switch t {
	case fsm.CmdTouch:
		return "touch"
	case fsm.CmdAlertsCreate:
		return "alerts_create"
	case fsm.CmdImportDecisions, fsm.CmdImportList:
		return "import_decisions"
	case fsm.CmdDecisionsExpire, fsm.CmdExpireByValue, fsm.CmdExpireSet:
		return "expire"
	case fsm.CmdMachineCreate, fsm.CmdMachineUpdate, fsm.CmdMachineDelete:
		return "machine"
	case fsm.CmdBouncerCreate, fsm.CmdBouncerUpdate, fsm.CmdBouncerDelete:
		return "bouncer"
	}
	return "other"
}
