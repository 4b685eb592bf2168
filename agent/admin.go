package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// SocketName is the admin socket's file name inside a node's data dir.
const SocketName = "admin.sock"

// Admin talks to a node's admin API over its unix socket.
type Admin struct {
	http *http.Client
	path string
}

// NewAdmin returns a client for the node that owns dataDir.
func NewAdmin(dataDir string) (*Admin, error) {
	sock := filepath.Join(dataDir, SocketName)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no running halapi node found in %s (admin socket %s: %v)", dataDir, sock, errors.Unwrap(err))
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &Admin{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, path: sock}, nil
}

// Do sends a request to the admin API and decodes a JSON answer into out
// (out may be nil). A non-2xx answer becomes an error with the server's message.
func (a *Admin) Do(method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://halapi/admin/v1" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the node on %s: %w", a.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return errors.New(e.Message)
		}
		return fmt.Errorf("admin API answered %s", resp.Status)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}
