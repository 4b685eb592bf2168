package admin

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

// Client talks to a node's admin API over its unix socket.
type Client struct {
	http *http.Client
	path string
}

// NewClient returns a client for the node that owns dataDir (an error
// naming the socket when no node runs there).
func NewClient(dataDir string) (*Client, error) {
	sock := filepath.Join(dataDir, SocketName)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no running halapi node found in %s (admin socket %s: %v)", dataDir, sock, errors.Unwrap(err))
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &Client{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, path: sock}, nil
}

// Do sends a request to the admin API and decodes a JSON answer into out
// (out may be nil). A non-2xx answer becomes an error with the server's message.
func (a *Client) Do(method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://halapi" + Prefix + path
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
		return errors.New(errorMessage(data, resp.Status))
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Download GETs an admin route and copies the raw answer to w, without
// the 30 s limit of Do (a backup of a big state streams for longer). A
// non-2xx answer becomes an error with the server's message.
func (a *Client) Download(path string, w io.Writer) error {
	c := *a.http
	c.Timeout = 0
	resp, err := c.Get("http://halapi" + Prefix + path)
	if err != nil {
		return fmt.Errorf("cannot reach the node on %s: %w", a.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return errors.New(errorMessage(b, resp.Status))
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// errorMessage is the "message" of an admin API error body, else status.
func errorMessage(body []byte, status string) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	return "admin API answered " + status
}
