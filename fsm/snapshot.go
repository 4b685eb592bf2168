package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/google/btree"
	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/s2"
)

// Snapshots are a stream of JSON records, one per line: a header with the
// counters and secrets, then every machine, bouncer, allowlist, alert,
// decision and tombstone. Records are written one by one so a snapshot
// never needs a second copy of the state in memory.

type snapMeta struct {
	Version        int               `json:"version"`
	JWTKey         []byte            `json:"jwt_key,omitempty"`
	Config         map[string][]byte `json:"config,omitempty"`
	Done           []doneRec         `json:"done,omitempty"`
	NextAlertID    int64             `json:"next_alert_id"`
	NextDecisionID int64             `json:"next_decision_id"`
	LastIndex      uint64            `json:"last_index"`
}

// doneRec is one remembered idempotent command result.
// Err is the message as older versions stored it (no code): still read,
// never written.
type doneRec struct {
	ID      string  `json:"id"`
	IDs     []int64 `json:"ids,omitempty"`
	N       int     `json:"n,omitempty"`
	Code    Code    `json:"code,omitempty"`
	Message string  `json:"msg,omitempty"`
	Err     string  `json:"err,omitempty"`
}

func doneRecs(s *state) []doneRec {
	out := make([]doneRec, 0, len(s.doneOrder))
	for _, id := range s.doneOrder {
		r := s.done[id]
		d := doneRec{ID: id, IDs: r.IDs, N: r.N, Code: r.Code, Message: r.Message}
		out = append(out, d)
	}
	return out
}

type snapRecord struct {
	Meta      *snapMeta   `json:"meta,omitempty"`
	Machine   *Machine    `json:"machine,omitempty"`
	Bouncer   *Bouncer    `json:"bouncer,omitempty"`
	Allowlist *Allowlist  `json:"allowlist,omitempty"`
	Alert     *Alert      `json:"alert,omitempty"`
	Decision  *Decision   `json:"decision,omitempty"`
	Tombstone *Decision   `json:"tombstone,omitempty"`
	Profiles  *ProfileSet `json:"profiles,omitempty"`
	// Audit is one audit record (cmd_audit.go), oldest first; older
	// versions skip the line (an unknown key decodes to an empty record).
	Audit *AuditRecord `json:"audit,omitempty"`
}

type fsmSnapshot struct {
	compress   bool
	meta       snapMeta
	machines   []*Machine
	bouncers   []*Bouncer
	allowlists []*Allowlist
	alerts     *btree.BTreeG[*Alert]
	decisions  *btree.BTreeG[*Decision]
	tombstones *btree.BTreeG[*Decision]
	profiles   *ProfileSet
	audit      auditLog
}

// Snapshot implements raft.FSM. It runs between applies; it takes a
// published state (immutable, B-trees copy-on-write) so this is
// O(machines + bouncers + remembered results).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	done := doneRecs(f.s)
	// A frozen copy of the writer's state (publish is O(1)): Persist reads
	// it while Apply goes on.
	f.publishLocked()
	s := f.read()
	f.mu.Unlock()
	snap := &fsmSnapshot{
		compress: f.compressSnapshots.Load(),
		meta: snapMeta{Version: 1, JWTKey: s.jwtKey, Config: s.config, Done: done, NextAlertID: s.nextAlertID,
			NextDecisionID: s.nextDecisionID, LastIndex: s.lastIndex},
		alerts:     s.alerts,
		decisions:  s.decisions,
		tombstones: s.tombstones,
		profiles:   s.profiles,
		audit:      s.audit,
	}
	for _, m := range s.machines {
		snap.machines = append(snap.machines, m)
	}
	for _, b := range s.bouncers {
		snap.bouncers = append(snap.bouncers, b)
	}
	for _, a := range s.allowlists {
		snap.allowlists = append(snap.allowlists, a)
	}
	return snap, nil
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}

// SetCompressedSnapshots makes the next snapshots s2-compressed (about 5x
// fewer bytes to write, send to a catching-up node and read back). Only a
// build that reads them may be sent one: the cluster turns this on once
// every voter applies CmdImportList, which came with compressed snapshots.
// Restore reads both forms, whatever this setting.
func (f *FSM) SetCompressedSnapshots(on bool) { f.compressSnapshots.Store(on) }

// snapS2Magic starts an s2 stream (its stream identifier chunk); a plain
// snapshot starts with '{'.
const snapS2Magic = "\xff\x06\x00\x00S2sTwO"

func (s *fsmSnapshot) write(w io.Writer) error {
	if s.compress {
		// concurrency 1: Persist runs beside the applies and the readers
		zw := s2.NewWriter(w, s2.WriterConcurrency(1))
		if err := s.writePlain(zw); err != nil {
			zw.Close()
			return err
		}
		return zw.Close()
	}
	return s.writePlain(w)
}

func (s *fsmSnapshot) writePlain(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	var err error
	put := func(r snapRecord) bool {
		err = enc.Encode(r)
		return err == nil
	}
	// decisions (nearly all of a big snapshot): the same bytes as enc
	// writes, without reflection (appendRecord)
	var line []byte
	putDecision := func(key string, d *Decision) bool {
		var ok bool
		if line, ok = appendRecord(line[:0], key, d); !ok {
			if key == "decision" {
				return put(snapRecord{Decision: d})
			}
			return put(snapRecord{Tombstone: d})
		}
		_, err = bw.Write(line)
		return err == nil
	}
	put(snapRecord{Meta: &s.meta})
	if s.profiles != nil {
		put(snapRecord{Profiles: s.profiles})
	}
	for _, m := range s.machines {
		put(snapRecord{Machine: m})
	}
	for _, b := range s.bouncers {
		put(snapRecord{Bouncer: b})
	}
	for _, a := range s.allowlists {
		put(snapRecord{Allowlist: a})
	}
	if err == nil {
		s.alerts.Ascend(func(a *Alert) bool { return put(snapRecord{Alert: a}) })
	}
	if err == nil {
		s.decisions.Ascend(func(d *Decision) bool { return putDecision("decision", d) })
	}
	if err == nil {
		s.tombstones.Ascend(func(d *Decision) bool { return putDecision("tombstone", d) })
	}
	if err == nil {
		s.audit.each(func(r *AuditRecord) bool { return put(snapRecord{Audit: r}) })
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Restore implements raft.FSM: it builds a new state from the stream and
// swaps it in at once.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.s = s
	f.publishLocked()
	f.mu.Unlock()
	f.markApplied(s.lastIndex)
	return nil
}

// restoreBlock is the size of the blocks of whole lines that restore
// workers decode in parallel.
const restoreBlock = 1 << 20

// decodedBlock is one block's records, in order, or the error that ended it.
type decodedBlock struct {
	recs []snapRecord
	err  error
	done chan struct{}
}

// decodeBlocks cuts the stream into blocks of whole lines and decodes
// them on workers, handing the blocks back in stream order. Records are
// one per line (json.Encoder never writes a newline inside one), so no
// record spans two blocks; several records on one line still decode.
// Closing stop makes the goroutines quit.
func decodeBlocks(r io.Reader, workers int, stop <-chan struct{}) <-chan *decodedBlock {
	type job struct {
		data []byte
		out  *decodedBlock
	}
	jobs := make(chan job, workers)
	ordered := make(chan *decodedBlock, 2*workers)
	for w := 0; w < workers; w++ {
		go func() {
			in := interner{}
			for j := range jobs {
				j.out.recs, j.out.err = decodeBlock(j.data, in)
				close(j.out.done)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(jobs)
		br := bufio.NewReaderSize(r, 256<<10)
		for {
			buf := make([]byte, restoreBlock)
			n, err := io.ReadFull(br, buf)
			buf = buf[:n]
			if err == nil {
				// finish the last line
				rest, rerr := br.ReadBytes('\n')
				buf = append(buf, rest...)
				if rerr != nil && rerr != io.EOF {
					err = rerr
				}
			} else if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = nil
				if n == 0 {
					return
				}
			}
			b := &decodedBlock{done: make(chan struct{})}
			if err != nil {
				b.err = err
				close(b.done)
			} else {
				select {
				case jobs <- job{data: buf, out: b}:
				case <-stop:
					return
				}
			}
			select {
			case ordered <- b:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ordered
}

// decodeBlock decodes the records of a block of whole lines: a line
// holding one decision or tombstone in the plain form directly
// (fastRecord), runs of other lines with encoding/json.
func decodeBlock(data []byte, in interner) ([]snapRecord, error) {
	var recs []snapRecord
	pending := -1
	flush := func(end int) error {
		if pending < 0 {
			return nil
		}
		dec := json.NewDecoder(bytes.NewReader(data[pending:end]))
		pending = -1
		for {
			var rec snapRecord
			if err := dec.Decode(&rec); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			setRange(&rec)
			recs = append(recs, rec)
		}
	}
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		if rec, ok := fastRecord(data[pos:end], in); ok {
			setRange(&rec)
			if err := flush(pos); err != nil {
				return recs, err
			}
			recs = append(recs, rec)
		} else if pending < 0 {
			pending = pos
		}
		pos = end + 1
	}
	return recs, flush(len(data))
}

// setRange computes the IP prefix of a decision or tombstone record (on
// the decoding workers: parsing a million addresses is not free).
func setRange(rec *snapRecord) {
	for _, d := range [...]*Decision{rec.Decision, rec.Tombstone} {
		if d != nil {
			d.Range = Prefix{}
			if IsIPScope(d.Scope) {
				d.Range = parsePrefix(d.Value)
			}
		}
	}
}

// readSnapshot builds a state from a snapshot stream. Decoding (most of
// the time) runs on every core; records are applied in stream order.
func readSnapshot(r io.Reader) (*state, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	if head, _ := br.Peek(len(snapS2Magic)); string(head) == snapS2Magic {
		r = s2.NewReader(br)
	} else {
		r = br
	}
	s := newState()
	stop := make(chan struct{})
	defer close(stop)
	for b := range decodeBlocks(r, max(2, runtime.GOMAXPROCS(0)), stop) {
		<-b.done
		for i := range b.recs {
			if err := s.restoreRecord(&b.recs[i]); err != nil {
				return nil, err
			}
		}
		if b.err != nil {
			return nil, fmt.Errorf("restore: %w", b.err)
		}
	}
	return s, nil
}

// restoreRecord adds one snapshot record to s.
func (s *state) restoreRecord(rec *snapRecord) error {
	switch {
	case rec.Meta != nil:
		if rec.Meta.Version != 1 {
			return fmt.Errorf("restore: unsupported snapshot version %d", rec.Meta.Version)
		}
		s.jwtKey = rec.Meta.JWTKey
		if rec.Meta.Config != nil {
			s.config = rec.Meta.Config
		}
		for _, d := range rec.Meta.Done {
			r := &Result{IDs: d.IDs, N: d.N, Code: d.Code, Message: d.Message}
			if r.Code == CodeOK && d.Err != "" {
				r.Code, r.Message = LegacyCode(d.Err), d.Err
			}
			s.remember(d.ID, r)
		}
		s.nextAlertID = rec.Meta.NextAlertID
		s.nextDecisionID = rec.Meta.NextDecisionID
		s.lastIndex = rec.Meta.LastIndex
	case rec.Machine != nil:
		s.wMachines()[rec.Machine.ID] = rec.Machine
	// A record repeated in the stream (a damaged or hostile snapshot;
	// we never write one) replaces the earlier one in every index,
	// so the indexes stay consistent with each other.
	case rec.Bouncer != nil:
		s.deleteBouncer(rec.Bouncer.Name)
		s.putBouncer(rec.Bouncer)
	case rec.Allowlist != nil:
		for i := range rec.Allowlist.Items {
			rec.Allowlist.Items[i].Range, _ = ParseRange(rec.Allowlist.Items[i].Value)
		}
		s.wAllowlists()[rec.Allowlist.Name] = rec.Allowlist
	case rec.Alert != nil:
		if _, replaced := s.alerts.ReplaceOrInsert(rec.Alert); !replaced {
			s.alertCount++
		}
	case rec.Decision != nil:
		d := rec.Decision
		// snapshots list decisions in ID order: only an ID at or below
		// the highest one seen can repeat an earlier record
		if d.ID <= s.restoredMaxID {
			if old := s.decision(d.ID); old != nil {
				s.removeDecision(old)
			}
		}
		s.restoredMaxID = max(s.restoredMaxID, d.ID)
		s.addDecision(d)
	case rec.Tombstone != nil:
		t := rec.Tombstone
		s.tombstones.ReplaceOrInsert(t)
	case rec.Profiles != nil:
		return s.restoreProfiles(rec.Profiles)
	case rec.Audit != nil:
		return s.restoreAudit(rec.Audit)
	}
	return nil
}
