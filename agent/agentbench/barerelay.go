package agentbench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
)

// The bare relay is the floor of any user-space proxy: bytes copied both
// ways (io.Copy, two goroutines per connection, one P like the agent), no
// HTTP parsing, no failover. Options.BareRelay runs it in place of the
// agent to tell the agent's own cost from the cost of one more process on
// the path and of the client's transport (TCP or unix socket).

// bareRelayFlag is the first argument that makes a program that called
// ServeBareRelayIfAsked a bare relay (Options.BareRelay re-executes the
// running program with it).
const bareRelayFlag = "-agentbench-bare-relay"

// ServeBareRelayIfAsked turns the program into a bare relay when it was
// started by Options.BareRelay; call it first in main. It returns only
// if the program was not asked to.
func ServeBareRelayIfAsked() {
	if len(os.Args) < 2 || os.Args[1] != bareRelayFlag {
		return
	}
	fs := flag.NewFlagSet("bare-relay", flag.ExitOnError)
	listen := fs.String("listen", "", "TCP listener")
	socket := fs.String("socket", "", "unix socket listener")
	upstream := fs.String("upstream", "", "node URL (http or https)")
	ca := fs.String("ca", "", "CA of an https upstream")
	_ = fs.Parse(os.Args[2:])
	if err := serveBareRelay(*listen, *socket, *upstream, *ca); err != nil {
		fmt.Fprintln(os.Stderr, "bare relay:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func bareRelayArgs(listen, socket, upstream, ca string) []string {
	return []string{bareRelayFlag, "-listen", listen, "-socket", socket, "-upstream", upstream, "-ca", ca}
}

func serveBareRelay(listen, socket, upstream, ca string) error {
	runtime.GOMAXPROCS(1)
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	dial := func() (net.Conn, error) { return net.Dial("tcp", u.Host) }
	if u.Scheme == "https" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return errors.New("no CA certificate")
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: u.Hostname()}
		dial = func() (net.Conn, error) { return tls.Dial("tcp", u.Host, cfg) }
	}
	var lns []net.Listener
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if socket != "" {
		ln, err := net.Listen("unix", socket)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go func() {
					defer c.Close()
					up, err := dial()
					if err != nil {
						return
					}
					defer up.Close()
					go func() { _, _ = io.Copy(up, c); up.Close() }()
					_, _ = io.Copy(c, up)
				}()
			}
		}()
	}
	return <-errc
}
