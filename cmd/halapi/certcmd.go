package main

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/halapi/halapi/agent"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/cobra"
)

func clusterTokenCmd(o *adminOpts) *cobra.Command {
	var ttl time.Duration
	c := &cobra.Command{
		Use: "token", Short: "Print a one-time join token for a new node", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var out map[string]string
			if err := o.call("POST", "/pki/join-token", url.Values{"ttl": {ttl.String()}}, nil, &out); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(out)
			}
			fmt.Println(out["token"])
			return nil
		},
	}
	c.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays usable")
	return c
}

func certCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "cert", Short: "Certificates of agents, bouncers and operators (built-in CA)"}
	o.bind(c)
	var out, lapiURL, p12PasswordFile string
	issue := &cobra.Command{
		Use: "issue agent|bouncer|admin NAME", Short: "Issue a client certificate and write it with a ready config (admin: a PKCS#12 for a browser)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := pki.ParseRole(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			if p12PasswordFile != "" && role != pki.RoleAdmin {
				return fmt.Errorf("--p12-password-file is for admin certificates")
			}
			// the PKCS#12 password: read before anything is issued
			var p12Password string
			generated := false
			if role == pki.RoleAdmin {
				if p12PasswordFile != "" {
					if p12Password, err = pki.ReadP12Password(p12PasswordFile); err != nil {
						return err
					}
				} else {
					if p12Password, err = pki.NewP12Password(); err != nil {
						return err
					}
					generated = true
				}
			}
			if !cmd.Flags().Changed("url") {
				var info pki.APIInfo
				if o.call("GET", "/api-info", nil, nil, &info) == nil && info.URL != "" {
					lapiURL = info.URL
				}
			}
			var res map[string]string
			if err := o.call("POST", "/pki/issue", url.Values{"role": {string(role)}, "name": {args[1]}}, nil, &res); err != nil {
				return err
			}
			m := &pki.ClientMaterial{CertPEM: []byte(res["cert"]), KeyPEM: []byte(res["key"]), CAPEM: []byte(res["ca"])}
			files, err := pki.WriteClientFiles(out, role, args[1], lapiURL, m)
			if err != nil {
				return err
			}
			if role == pki.RoleAdmin {
				p12, err := pki.WriteAdminP12(out, args[1], m, p12Password)
				if err != nil {
					return err
				}
				files = append(files, p12)
			}
			fmt.Printf("Certificate %s issued for %s '%s'; wrote:\n", res["serial"], role, args[1])
			for _, f := range files {
				fmt.Println("  " + f)
			}
			if generated {
				// shown once, here only: it is not stored anywhere
				fmt.Printf("PKCS#12 password (import %s.p12 into the browser with it): %s\n", args[1], p12Password)
			}
			return nil
		},
	}
	issue.Flags().StringVar(&out, "out", "", "directory to write the certificate, key, CA and config into")
	issue.Flags().StringVar(&p12PasswordFile, "p12-password-file", "", "admin: read the PKCS#12 password from the first line of this file (default: a random one, printed once)")
	issue.Flags().StringVarP(&lapiURL, "url", "u", "https://127.0.0.1:8080/", "LAPI URL written in the config (default: the node's own API URL)")
	var ttl time.Duration
	token := &cobra.Command{
		Use: "token agent|bouncer NAME", Short: "Print a one-time enrollment token (halapi agent enroll, step ca certificate)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			role, err := pki.ParseRole(args[0])
			if err != nil {
				return err
			}
			q := url.Values{"role": {string(role)}, "name": {args[1]}}
			if ttl > 0 {
				q.Set("ttl", ttl.String())
			}
			var res map[string]string
			if err := o.call("POST", "/pki/token", q, nil, &res); err != nil {
				return err
			}
			fmt.Println(res["token"])
			return nil
		},
	}
	token.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the CA's)")
	list := &cobra.Command{
		Use: "list", Short: "List issued certificates", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var certs []pki.CertInfo
			if err := o.call("GET", "/pki/certs", nil, nil, &certs); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(certs)
			}
			var rows [][]string
			for _, c := range certs {
				st := "valid"
				if c.Revoked {
					st = "revoked"
				} else if time.Now().After(c.NotAfter) {
					st = "expired"
				}
				rows = append(rows, []string{c.Serial, c.Name, string(c.Role), st, c.NotAfter.Local().Format(time.RFC3339)})
			}
			table("SERIAL\tNAME\tROLE\tSTATUS\tNOT AFTER", rows)
			return nil
		},
	}
	var name, reason string
	revoke := &cobra.Command{
		Use: "revoke [SERIAL]", Short: "Revoke a certificate by serial, or every certificate of --name", Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			q := url.Values{"reason": {reason}}
			switch {
			case len(args) == 1 && name == "":
				q.Set("serial", args[0])
			case len(args) == 0 && name != "":
				q.Set("name", name)
			default:
				return fmt.Errorf("give a SERIAL or --name NAME")
			}
			var res map[string][]string
			if err := o.call("POST", "/pki/revoke", q, nil, &res); err != nil {
				return err
			}
			if name != "" && len(res["revoked"]) == 0 {
				return fmt.Errorf("no valid certificate issued to %q (see halapi cert list)", name)
			}
			fmt.Printf("%d certificate(s) revoked\n", len(res["revoked"]))
			return nil
		},
	}
	revoke.Flags().StringVar(&name, "name", "", "revoke every certificate issued to this name")
	revoke.Flags().StringVar(&reason, "reason", "", "revocation reason")
	c.AddCommand(issue, token, list, revoke)
	return c
}

func agentCmd() *cobra.Command {
	c := &cobra.Command{Use: "agent", Short: "Client-side helpers for agents and bouncers"}
	var apiURL, token, out, lapiURL, agentListen, agentTLSListen, agentSocket, agentSocketGroup string
	var servers []string
	var noAgent bool
	enroll := &cobra.Command{
		Use: "enroll", Short: "Obtain a client certificate with a one-time token and write a ready config", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apiURL == "" || token == "" || out == "" {
				return fmt.Errorf("--url, --token and --out are required")
			}
			if strings.HasPrefix(lapiURL, "/") {
				// crowdsec refuses TLS with a socket ("cannot use TLS with a unix
				// socket") and go-cs-bouncer v0.0.21 cannot dial one at all
				return fmt.Errorf("--lapi-url %q: a certificate client cannot use a unix socket (crowdsec refuses TLS over one); --agent-socket is for password agents and cscli", lapiURL)
			}
			if agentSocket != "" && noAgent {
				return fmt.Errorf("--agent-socket needs the agent (drop --no-agent)")
			}
			info, err := pki.InspectToken(token)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			m, err := pki.Enroll(ctx, apiURL, token)
			if err != nil {
				return err
			}
			if noAgent && lapiURL == "" {
				lapiURL = apiURL
			}
			files, err := pki.WriteClientFiles(out, info.Role, info.Subject, lapiURL, m)
			if err != nil {
				return err
			}
			if !noAgent {
				more, err := setupLocalAgent(out, info.Role, info.Subject, apiURL, lapiURL, servers, agentListen, agentTLSListen, agentSocket, agentSocketGroup)
				if err != nil {
					return err
				}
				files = append(files, more...)
			}
			fmt.Printf("Enrolled %s '%s'; wrote:\n", info.Role, info.Subject)
			for _, f := range files {
				fmt.Println("  " + f)
			}
			if !noAgent {
				fmt.Printf("Run the local agent with `halapi agent run --config %s` (dist/systemd/halapi-agent.service); the client config points at it.\n",
					filepath.Join(out, agent.ConfigFile))
				if agentSocket != "" {
					fmt.Printf("Password agents and cscli on this host can use the agent's socket: `url: %s` in their local_api_credentials.yaml (no ca_cert_path: no TLS on a socket).\n", agentSocket)
				}
			}
			return nil
		},
	}
	enroll.Flags().StringVar(&apiURL, "url", "", "HTTPS URL of any halapi node")
	enroll.Flags().StringVar(&token, "token", "", "one-time token from `halapi cert token`")
	enroll.Flags().StringVar(&out, "out", "", "directory to write the certificate, key, CA and config into")
	enroll.Flags().StringVar(&lapiURL, "lapi-url", "", "LAPI URL written in the client config (default: the local agent's TLS listener; with --no-agent, --url)")
	enroll.Flags().BoolVar(&noAgent, "no-agent", false, "do not set up `halapi agent run`: the client config points at --url")
	enroll.Flags().StringSliceVar(&servers, "server", nil, "node API URLs the agent starts from (default: --url; the others are learned from the member list)")
	enroll.Flags().StringVar(&agentListen, "agent-listen", agent.DefaultListen, "the agent's plain local listener (API-key and password clients)")
	enroll.Flags().StringVar(&agentSocket, "agent-socket", "", "also have the agent listen on this unix socket (e.g. /run/halapi-agent/agent.sock) for password agents and cscli; the certificate client keeps the TLS listener")
	enroll.Flags().StringVar(&agentSocketGroup, "agent-socket-group", "", "group given the agent's socket (name or ID)")
	enroll.Flags().StringVar(&agentTLSListen, "agent-tls-listen", agent.DefaultTLSListen, "the agent's TLS local listener (certificate clients)")
	c.AddCommand(enroll, agentRunCmd(), agentStatusCmd())
	return c
}
