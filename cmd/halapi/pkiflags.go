package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/halapi/halapi/pki"
	"github.com/spf13/pflag"
)

// pkiFlags are the serve flags of the built-in PKI.
type pkiFlags struct {
	plainHTTP       bool
	plainRemote     bool
	insecureCluster bool
	apiNames        []string
	joinToken       string
	joinTokenFile   string
	joinAPI         string
	agentOUs        []string
	bouncerOUs      []string
	adminOUs        []string
	clientCAs       []string
	crl             string
	nodeCertTTL     time.Duration
	clientCertTTL   time.Duration
	clientOCSP      bool
	clientOCSPCache time.Duration
}

func bindPKIFlags(fl *pflag.FlagSet, f *pkiFlags) {
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "serve the LAPI over plain HTTP (only on a loopback --listen, unless --allow-plain-http-remote)")
	fl.BoolVar(&f.insecureCluster, "insecure-cluster", false, "plain TCP and clear-text gossip between nodes, no join tokens (only on loopback cluster addresses; tests)")
	fl.StringArrayVar(&f.apiNames, "api-name", nil, "extra DNS name or IP for this node's certificate, e.g. one name for all nodes (repeatable)")
	fl.StringVar(&f.joinToken, "join-token", "", "join token from `halapi cluster token` (a new node fetches its certificate and the gossip key with it)")
	fl.StringVar(&f.joinTokenFile, "join-token-file", "", "read --join-token from this file (- for stdin), so it does not show in ps")
	fl.StringVar(&f.joinAPI, "join-api", "", "HTTPS API address (host:port) of a member, to redeem --join-token")
	fl.StringSliceVar(&f.agentOUs, "agents-allowed-ou", []string{pki.DefaultAgentOU}, "OUs accepted in agent client certificates")
	fl.StringSliceVar(&f.bouncerOUs, "bouncers-allowed-ou", []string{pki.DefaultBouncerOU}, "OUs accepted in bouncer client certificates")
	fl.StringSliceVar(&f.adminOUs, "admins-allowed-ou", []string{pki.DefaultAdminOU}, "OUs accepted in operator (web console) certificates of the cluster CA")
	fl.StringArrayVar(&f.clientCAs, "client-ca", nil, "PEM bundle of an external CA trusted for client certificates (repeatable)")
	fl.StringVar(&f.crl, "crl", "", "PEM CRL file for the external CAs")
	fl.BoolVar(&f.clientOCSP, "client-ocsp", true, "check client certificates against the OCSP servers they list, as CrowdSec does (no answer: accepted)")
	fl.DurationVar(&f.clientOCSPCache, "client-ocsp-cache", pki.DefaultOCSPCache, "how long an OCSP answer is kept (CrowdSec's tls cache_expiration)")
	fl.DurationVar(&f.nodeCertTTL, "node-cert-ttl", 0, "lifetime of node certificates (default: the pki package's)")
	fl.DurationVar(&f.clientCertTTL, "client-cert-ttl", 0, "lifetime of agent and bouncer certificates")
}

// check refuses clear-text settings off loopback (before anything is
// written).
func (f pkiFlags) check(listen, clusterListen string) error {
	if f.plainHTTP && !f.plainRemote && !isLoopbackHost(listen) {
		return fmt.Errorf("--plain-http is only allowed on a loopback --listen address, not %s", listen)
	}
	if f.insecureCluster && clusterListen != "" && !isLoopbackHost(clusterListen) {
		return fmt.Errorf("--insecure-cluster is only allowed on a loopback --cluster-listen address, not %s", clusterListen)
	}
	return nil
}

// pkiRuntimeConfig maps the flags onto the PKI runtime's settings.
func (f serveFlags) pkiRuntimeConfig() pki.RuntimeConfig {
	return pki.RuntimeConfig{NodeID: f.nodeID, DataDir: f.dataDir, Listen: f.listen, APINames: f.pki.apiNames, APIAdvertise: f.apiAdvertise,
		ClusterListen: f.clusterListen, InsecureCluster: f.pki.insecureCluster,
		JoinToken: f.pki.joinToken, JoinAPI: f.pki.joinAPI,
		NodeCertTTL: f.pki.nodeCertTTL, ClientCertTTL: f.pki.clientCertTTL,
		PlainHTTP: f.pki.plainHTTP, ExternalCert: f.tlsCert != ""}
}

func isLoopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// certVerifier adapts pki.ClientVerifier to lapi.CertVerifier.
type certVerifier struct{ v *pki.ClientVerifier }

func (c certVerifier) HasCert(cs *tls.ConnectionState) bool { return pki.HasClientCert(cs) }

func (c certVerifier) Verify(cs *tls.ConnectionState, agent bool) (string, error) {
	if agent {
		return c.v.Verify(cs, pki.RoleAgent)
	}
	return c.v.Verify(cs, pki.RoleBouncer)
}
