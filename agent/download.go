package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Download GETs an admin route and copies the raw answer to w, without
// the 30 s limit of Do (a backup of a big state streams for longer). A
// non-2xx answer becomes an error with the server's message.
func (a *Admin) Download(path string, w io.Writer) error {
	c := *a.http
	c.Timeout = 0
	resp, err := c.Get("http://halapi/admin/v1" + path)
	if err != nil {
		return fmt.Errorf("cannot reach the node on %s: %w", a.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return errors.New(adminMessage(b, resp.Status))
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// adminMessage is the "message" of an admin API error body, else status.
func adminMessage(body []byte, status string) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	return "admin API answered " + status
}
