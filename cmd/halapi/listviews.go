package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/pki"
)

// allowlistView mirrors the admin API's allowlist (CrowdSec's shape).
type allowlistView struct {
	Name           string              `json:"name"`
	AllowlistID    string              `json:"allowlist_id,omitempty"`
	Description    string              `json:"description,omitempty"`
	Items          []allowlistItemView `json:"items"`
	CreatedAt      string              `json:"created_at"`
	UpdatedAt      string              `json:"updated_at"`
	ConsoleManaged bool                `json:"console_managed,omitempty"`
}

type allowlistItemView struct {
	Value       string `json:"value"`
	Description string `json:"description,omitempty"`
	CreatedAt   string `json:"created_at"`
	Expiration  string `json:"expiration"`
}

// printAllowlists: one table of the lists, then the values of each.
func printAllowlists(ls []allowlistView) {
	if len(ls) == 0 {
		fmt.Println("No allowlists (create one with: halapi allowlists create NAME)")
		return
	}
	var rows [][]string
	for _, l := range ls {
		rows = append(rows, []string{l.Name, orDash(l.Description), fmt.Sprint(len(l.Items)), shortTime(l.CreatedAt), shortTime(l.UpdatedAt)})
	}
	table("NAME\tDESCRIPTION\tVALUES\tCREATED AT\tUPDATED AT", rows)
	for _, l := range ls {
		if len(l.Items) == 0 {
			continue
		}
		fmt.Printf("\n%s:\n", l.Name)
		tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "  VALUE\tCOMMENT\tEXPIRES")
		for _, it := range l.Items {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", it.Value, orDash(it.Description), expiry(it.Expiration))
		}
		_ = tw.Flush()
	}
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// shortTime shows an RFC 3339 time in local time, "-" for the zero time.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return orDash(s)
	}
	if t.IsZero() || t.Year() <= 1 {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func expiry(s string) string {
	if v := shortTime(s); v != "-" {
		return v
	}
	return "never"
}

// revokedCertBouncers names the certificate-authenticated bouncers
// (`<CN>@<ip>` rows) whose certificates are all revoked: such a bouncer
// can no longer pull. Empty when the CA is not reachable.
func (o *adminOpts) revokedCertBouncers(bs []lapi.BouncerView) map[string]bool {
	out := map[string]bool{}
	hasTLS := false
	for _, b := range bs {
		hasTLS = hasTLS || b.AuthType == "tls"
	}
	if !hasTLS {
		return out
	}
	var certs []pki.CertInfo
	if err := o.call("GET", "/pki/certs", nil, nil, &certs); err != nil {
		return out
	}
	now := time.Now()
	revoked, valid := map[string]bool{}, map[string]bool{}
	for _, c := range certs {
		if c.Role != pki.RoleBouncer {
			continue
		}
		switch {
		case c.Revoked:
			revoked[c.Name] = true
		case now.Before(c.NotAfter):
			valid[c.Name] = true
		}
	}
	for _, b := range bs {
		if b.AuthType != "tls" {
			continue
		}
		cn := b.Name
		if i := strings.LastIndex(cn, "@"); i > 0 {
			cn = cn[:i]
		}
		if revoked[cn] && !valid[cn] {
			out[b.Name] = true
		}
	}
	return out
}

// bouncerListView is a bouncer row with its certificate status.
type bouncerListView struct {
	lapi.BouncerView
	CertRevoked bool `json:"cert_revoked,omitempty"`
}

func withCertRevoked(bs []lapi.BouncerView, revoked map[string]bool) []bouncerListView {
	out := make([]bouncerListView, 0, len(bs))
	for _, b := range bs {
		out = append(out, bouncerListView{BouncerView: b, CertRevoked: revoked[b.Name]})
	}
	return out
}
