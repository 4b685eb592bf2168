package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Backups (`halapi cluster snapshot save`) are a gzipped tar of three
// files, Consul's layout:
//
//	meta.json   BackupMeta: raft index and term, configuration, size
//	state.bin   the FSM snapshot exactly as raft's snapshot store holds it
//	SHA256SUMS  checksums of the two files above
//
// A backup is taken from a raft snapshot of the node's FSM (one
// consistent point: the FSM snapshots under its lock). It holds every
// secret of the cluster (CA keys, JWT key, password hashes, CAPI
// credentials): the CLI writes it 0600.

// BackupFormat is the archive format this build writes and reads.
const BackupFormat = 1

const (
	backupMetaName  = "meta.json"
	backupStateName = "state.bin"
	backupSumsName  = "SHA256SUMS"
	// maxBackupMeta bounds meta.json and SHA256SUMS when reading.
	maxBackupMeta = 1 << 20
)

// BackupServer is one member of the raft configuration in a backup.
type BackupServer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// BackupMeta describes a backup.
type BackupMeta struct {
	Format  int            `json:"format"`
	NodeID  string         `json:"node_id"`
	Index   uint64         `json:"index"`
	Term    uint64         `json:"term"`
	Size    int64          `json:"size"`
	Created time.Time      `json:"created"`
	Servers []BackupServer `json:"servers"`
	// Version is the halapi version that wrote the backup (informative).
	Version string `json:"halapi_version,omitempty"`
	// LeaderSynced: the node had applied everything the leader had
	// committed when the backup was asked for (false: no leader answered
	// within 5 s; the backup holds what this node had applied).
	LeaderSynced bool `json:"leader_synced"`
}

// WriteBackup takes a raft snapshot of this node's FSM now (or reuses the
// newest one when nothing was applied since) and writes it to w as a
// backup archive. Any node can do it: it first catches up with the
// leader's commit index (bounded by 5 s), so a backup holds every write
// acknowledged anywhere before it was asked for.
func (n *Node) WriteBackup(ctx context.Context, w io.Writer, version string) (BackupMeta, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	synced := n.SyncLeader(sctx) == nil
	cancel()
	meta, rc, err := n.openSnapshot()
	if err != nil {
		return BackupMeta{}, err
	}
	defer rc.Close()
	bm := BackupMeta{Format: BackupFormat, NodeID: n.cfg.NodeID, Index: meta.Index, Term: meta.Term,
		Size: meta.Size, Created: time.Now().UTC(), Version: version, LeaderSynced: synced}
	for _, s := range meta.Configuration.Servers {
		bm.Servers = append(bm.Servers, BackupServer{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return bm, writeArchive(ctx, w, bm, rc)
}

func (n *Node) openSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	fut := n.raft.Snapshot()
	err := fut.Error()
	if err == nil {
		return fut.Open()
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) || n.snaps == nil {
		return nil, nil, fmt.Errorf("raft snapshot: %w", err)
	}
	// Nothing applied since the last snapshot: that one is current.
	list, err := n.snaps.List()
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return nil, nil, errors.New("no raft snapshot to back up")
	}
	return n.snaps.Open(list[0].ID)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func writeArchive(ctx context.Context, w io.Writer, bm BackupMeta, state io.Reader) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	metaJSON, err := json.MarshalIndent(bm, "", "  ")
	if err != nil {
		return err
	}
	now := bm.Created
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(backupMetaName, metaJSON); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: backupStateName, Mode: 0o600, Size: bm.Size, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	h := sha256.New()
	copied, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(ctxReader{ctx, state}, bm.Size))
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if copied != bm.Size {
		return fmt.Errorf("snapshot is %d bytes, its metadata says %d", copied, bm.Size)
	}
	mh := sha256.Sum256(metaJSON)
	sums := fmt.Sprintf("%s  %s\n%s  %s\n", hex.EncodeToString(mh[:]), backupMetaName, hex.EncodeToString(h.Sum(nil)), backupStateName)
	if err := put(backupSumsName, []byte(sums)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// ReadBackup reads a backup archive, copies the FSM snapshot to state and
// checks every checksum; the archive is valid only if it returns nil
// (state then holds exactly BackupMeta.Size bytes).
func ReadBackup(r io.Reader, state io.Writer) (BackupMeta, error) {
	var bm BackupMeta
	gz, err := gzip.NewReader(r)
	if err != nil {
		return bm, fmt.Errorf("not a halapi backup (gzip: %v)", err)
	}
	tr := tar.NewReader(gz)
	sums := map[string]string{}
	var metaSum, stateSum string
	var haveMeta, haveState, haveSums bool
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return bm, fmt.Errorf("not a halapi backup (tar: %v)", err)
		}
		switch hdr.Name {
		case backupMetaName:
			b, err := io.ReadAll(io.LimitReader(tr, maxBackupMeta+1))
			if err != nil || len(b) > maxBackupMeta {
				return bm, fmt.Errorf("backup %s: unreadable or too large", backupMetaName)
			}
			if err := json.Unmarshal(b, &bm); err != nil {
				return bm, fmt.Errorf("backup %s: %v", backupMetaName, err)
			}
			if bm.Format != BackupFormat {
				return bm, fmt.Errorf("backup format %d: this halapi reads format %d", bm.Format, BackupFormat)
			}
			s := sha256.Sum256(b)
			metaSum, haveMeta = hex.EncodeToString(s[:]), true
		case backupStateName:
			if !haveMeta {
				return bm, fmt.Errorf("backup: %s before %s", backupStateName, backupMetaName)
			}
			if hdr.Size != bm.Size {
				return bm, fmt.Errorf("backup: %s is %d bytes, %s says %d", backupStateName, hdr.Size, backupMetaName, bm.Size)
			}
			h := sha256.New()
			if _, err := io.Copy(io.MultiWriter(state, h), tr); err != nil {
				return bm, fmt.Errorf("backup %s: %v", backupStateName, err)
			}
			stateSum, haveState = hex.EncodeToString(h.Sum(nil)), true
		case backupSumsName:
			b, err := io.ReadAll(io.LimitReader(tr, maxBackupMeta+1))
			if err != nil || len(b) > maxBackupMeta {
				return bm, fmt.Errorf("backup %s: unreadable or too large", backupSumsName)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				f := strings.Fields(line)
				if len(f) == 2 {
					sums[f[1]] = f[0]
				}
			}
			haveSums = true
		default:
			return bm, fmt.Errorf("backup: unexpected file %q", hdr.Name)
		}
	}
	switch {
	case !haveMeta || !haveState || !haveSums:
		return bm, errors.New("backup is incomplete (truncated file?)")
	case sums[backupMetaName] != metaSum:
		return bm, fmt.Errorf("backup: %s checksum mismatch", backupMetaName)
	case sums[backupStateName] != stateSum:
		return bm, fmt.Errorf("backup: %s checksum mismatch", backupStateName)
	case bm.Index == 0 || bm.Term == 0:
		return bm, errors.New("backup: no raft index or term")
	}
	return bm, nil
}

// RestoreTarget is the node a backup is restored into.
type RestoreTarget struct {
	DataDir string
	NodeID  string
	// Address is the node's cluster address as peers will dial it
	// (--cluster-advertise, else --cluster-listen); empty for a node
	// without --cluster-listen.
	Address string
}

func (t RestoreTarget) raftAddr() raft.ServerAddress {
	if t.Address == "" {
		return raft.ServerAddress("local-" + t.NodeID)
	}
	return raft.ServerAddress(t.Address)
}

// RestoreBackup writes a backup into an empty data dir as the state of a
// new one-node cluster whose only voter is the target: `serve` started on
// that data dir (same --node-id and cluster address) leads with the
// backup's state, and further nodes join it. check validates the FSM
// snapshot (the caller restores it into a scratch FSM) before anything is
// written to the raft stores. The node must not be running.
func RestoreBackup(t RestoreTarget, archive io.Reader, check func(state io.Reader) error) (BackupMeta, error) {
	dir := filepath.Join(t.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return BackupMeta{}, err
	}
	tmp, err := os.CreateTemp(t.DataDir, "restore-*.tmp")
	if err != nil {
		return BackupMeta{}, err
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	bm, err := ReadBackup(archive, tmp)
	if err != nil {
		return bm, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return bm, err
	}
	if err := check(tmp); err != nil {
		return bm, fmt.Errorf("the backup's state does not load: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return bm, err
	}

	store, snaps, err := openOffline(dir)
	if err != nil {
		return bm, err
	}
	defer store.Close()
	if has, err := raft.HasExistingState(store, store, snaps); err != nil {
		return bm, err
	} else if has {
		return bm, fmt.Errorf("%s already holds raft state: restore into an empty data dir", t.DataDir)
	}
	_, trans := raft.NewInmemTransport(t.raftAddr())
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(t.NodeID), Address: t.raftAddr()}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, bm.Index, bm.Term, conf, bm.Index, trans)
	if err != nil {
		return bm, err
	}
	if _, err := io.Copy(sink, tmp); err != nil {
		_ = sink.Cancel()
		return bm, err
	}
	if err := sink.Close(); err != nil {
		return bm, err
	}
	// The new cluster continues the backup's terms: the next election's
	// term is above every term in the snapshot.
	if err := store.SetUint64([]byte("CurrentTerm"), bm.Term); err != nil {
		return bm, err
	}
	return bm, nil
}

// Voter is one member of the configuration `halapi cluster recover` writes.
type Voter struct {
	ID      string
	Address string // "" = the address in the node's last known configuration
}

// ParseVoters reads "n1,n2=10.0.0.2:8300": ids, each optionally with its
// cluster address.
func ParseVoters(specs []string) ([]Voter, error) {
	var out []Voter
	seen := map[string]bool{}
	for _, s := range specs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		id, addr, _ := strings.Cut(s, "=")
		if id == "" || seen[id] {
			return nil, fmt.Errorf("--voters: empty or repeated node id in %q", s)
		}
		seen[id] = true
		out = append(out, Voter{ID: id, Address: addr})
	}
	if len(out) == 0 {
		return nil, errors.New("--voters: give at least one node id")
	}
	return out, nil
}

// LastConfiguration reads the newest raft configuration a stopped node's
// data dir holds (its snapshot, then the configuration entries of its log).
func LastConfiguration(dataDir string) (raft.Configuration, error) {
	store, snaps, err := openOffline(filepath.Join(dataDir, "raft"))
	if err != nil {
		return raft.Configuration{}, err
	}
	defer store.Close()
	return lastConfiguration(store, snaps)
}

func lastConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (raft.Configuration, error) {
	var conf raft.Configuration
	var snapIndex uint64
	list, err := snaps.List()
	if err != nil {
		return conf, err
	}
	if len(list) > 0 {
		conf, snapIndex = list[0].Configuration, list[0].Index
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return conf, err
	}
	last, err := logs.LastIndex()
	if err != nil {
		return conf, err
	}
	for i := max(first, snapIndex+1); i <= last && i > 0; i++ {
		var e raft.Log
		if err := logs.GetLog(i, &e); err != nil {
			return conf, fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if e.Type == raft.LogConfiguration {
			conf = raft.DecodeConfiguration(e.Data)
		}
	}
	return conf, nil
}

// Recover rewrites a stopped node's raft state so that its configuration
// is exactly voters (Consul's peers.json, hashicorp/raft RecoverCluster):
// for a cluster that lost its quorum for good. The node's FSM state is
// kept (its snapshot plus every entry of its log, committed or not). Run
// it on every surviving node with the same voters, then start them.
func Recover(dataDir string, voters []Voter, f raft.FSM) (raft.Configuration, error) {
	dir := filepath.Join(dataDir, "raft")
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		return raft.Configuration{}, fmt.Errorf("%s holds no raft state (%v)", dataDir, errors.Unwrap(err))
	}
	store, snaps, err := openOffline(dir)
	if err != nil {
		return raft.Configuration{}, err
	}
	defer store.Close()
	old, err := lastConfiguration(store, snaps)
	if err != nil {
		return raft.Configuration{}, err
	}
	known := map[string]raft.ServerAddress{}
	for _, s := range old.Servers {
		known[string(s.ID)] = s.Address
	}
	var conf raft.Configuration
	for _, v := range voters {
		addr := raft.ServerAddress(v.Address)
		if addr == "" {
			a, ok := known[v.ID]
			if !ok {
				return conf, fmt.Errorf("node %q is not in this node's last configuration (%s): give its address as %s=HOST:PORT", v.ID, describeConf(old), v.ID)
			}
			addr = a
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v.ID), Address: addr})
	}
	rc := raft.DefaultConfig()
	rc.LocalID = conf.Servers[0].ID
	rc.Logger = hclog.NewNullLogger()
	_, trans := raft.NewInmemTransport(conf.Servers[0].Address)
	if err := raft.RecoverCluster(rc, f, store, store, snaps, trans, conf); err != nil {
		return conf, fmt.Errorf("recover: %w", err)
	}
	return conf, nil
}

func describeConf(c raft.Configuration) string {
	var b bytes.Buffer
	for i, s := range c.Servers {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%s", s.ID, s.Address)
	}
	if b.Len() == 0 {
		return "empty"
	}
	return b.String()
}

// openOffline opens a stopped node's raft stores (the caller holds the
// data dir lock, so no serve has them open).
func openOffline(dir string) (*raftboltdb.BoltStore, raft.SnapshotStore, error) {
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: logStoreOptions()})
	if err != nil {
		return nil, nil, fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return store, snaps, nil
}
