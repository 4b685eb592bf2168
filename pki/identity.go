package pki

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A node keeps its own identity in its data dir, like its raft log: the
// node certificate and key, the cluster root and the gossip key. It needs
// them before raft has caught up (mTLS to peers, encrypted gossip), so
// they cannot come from the FSM at start. The CA itself never leaves the
// FSM.
const (
	NodeCertFile  = "node.crt"
	NodeKeyFile   = "node.key"
	CAFile        = "ca.crt"
	GossipKeyFile = "gossip.key"
)

// writeFileAtomic writes through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// SaveIdentity writes the node's identity files into dir (created 0700;
// keys 0600).
func SaveIdentity(dir string, id *JoinResult) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if len(id.CAPEM) > 0 {
		if err := writeFileAtomic(filepath.Join(dir, CAFile), id.CAPEM, 0o644); err != nil {
			return err
		}
	}
	if len(id.GossipKey) > 0 {
		enc := []byte(base64.StdEncoding.EncodeToString(id.GossipKey) + "\n")
		if err := writeFileAtomic(filepath.Join(dir, GossipKeyFile), enc, 0o600); err != nil {
			return err
		}
	}
	if len(id.CertPEM) > 0 && len(id.KeyPEM) > 0 {
		if err := writeFileAtomic(filepath.Join(dir, NodeKeyFile), id.KeyPEM, 0o600); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, NodeCertFile), id.CertPEM, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// LoadIdentity reads what SaveIdentity wrote; missing files leave their
// fields empty, and a dir with none of them is os.ErrNotExist.
func LoadIdentity(dir string) (*JoinResult, error) {
	id := &JoinResult{}
	found := false
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err == nil {
			found = true
		}
		return b, err
	}
	var err error
	if id.CertPEM, err = read(NodeCertFile); err != nil {
		return nil, err
	}
	if id.KeyPEM, err = read(NodeKeyFile); err != nil {
		return nil, err
	}
	if id.CAPEM, err = read(CAFile); err != nil {
		return nil, err
	}
	gk, err := read(GossipKeyFile)
	if err != nil {
		return nil, err
	}
	if len(gk) > 0 {
		// One key per line, the primary first (SaveGossipKeys); only the
		// primary is needed to start.
		first, _, _ := strings.Cut(strings.TrimSpace(string(gk)), "\n")
		if id.GossipKey, err = base64.StdEncoding.DecodeString(strings.TrimSpace(first)); err != nil {
			return nil, fmt.Errorf("%s: %w", GossipKeyFile, err)
		}
	}
	if !found {
		return nil, os.ErrNotExist
	}
	return id, nil
}

// SaveGossipKeys persists a node's gossip keyring in dir (0600): one
// base64 key per line, the primary first; LoadIdentity returns the
// primary as GossipKey.
func SaveGossipKeys(dir string, primary []byte, keys [][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(base64.StdEncoding.EncodeToString(primary) + "\n")
	for _, k := range keys {
		if string(k) != string(primary) {
			b.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
		}
	}
	return writeFileAtomic(filepath.Join(dir, GossipKeyFile), []byte(b.String()), 0o600)
}

// HasIdentity reports whether dataDir holds a node identity (DATA/pki:
// a node certificate or a gossip key): an offline restore or import
// refuses such a data dir.
func HasIdentity(dataDir string) bool {
	for _, name := range []string{NodeCertFile, GossipKeyFile} {
		if _, err := os.Stat(filepath.Join(dataDir, "pki", name)); err == nil {
			return true
		}
	}
	return false
}
