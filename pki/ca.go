package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"
)

// Role is what a certificate is for; it decides the OU put in it.
type Role string

// Roles.
const (
	RoleAgent   Role = "agent"
	RoleBouncer Role = "bouncer"
	RoleNode    Role = "node"
	// RoleAdmin is an operator of the cluster (the web console): issued
	// by `halapi cert issue admin` only, never through a token.
	RoleAdmin Role = "admin"
)

// ParseRole accepts "agent", "machine" (CrowdSec's word), "bouncer" and
// "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "agent", "machine":
		return RoleAgent, nil
	case "bouncer":
		return RoleBouncer, nil
	case "admin":
		return RoleAdmin, nil
	}
	return "", fmt.Errorf("unknown role %q (want agent, bouncer or admin)", s)
}

// Errors.
var (
	ErrNotBootstrapped = errors.New("pki: the cluster has no CA yet")
	ErrUnknownCert     = errors.New("pki: no certificate with that serial was issued by this CA")
	ErrAlreadyRevoked  = errors.New("pki: certificate already revoked")
)

// Defaults.
const (
	DefaultName          = "halapi"
	DefaultAgentOU       = "agent-ou"
	DefaultBouncerOU     = "bouncer-ou"
	DefaultNodeOU        = "node-ou"
	DefaultAdminOU       = "admin-ou"
	DefaultClientCertTTL = 365 * 24 * time.Hour
	DefaultNodeCertTTL   = 30 * 24 * time.Hour
	DefaultTokenTTL      = time.Hour
	DefaultCRLValidity   = 24 * time.Hour
	caValidity           = 10 * 365 * 24 * time.Hour
	// legacyAudience is accepted by every step-ca as a sign and revoke
	// audience, whatever URL the client used.
	legacyAudience = "step-certificate-authority"
)

// Options configure Bootstrap and New. The zero value is usable.
type Options struct {
	// MemberAlive, if set, reports whether a node id is already a live
	// cluster member: a join token redeemed for such an id is refused
	// before it is spent.
	MemberAlive func(nodeID string) bool
	// Name prefixes the CA subjects ("<Name> Root CA") and names the
	// provisioner. It must be the same on every node. Default "halapi".
	Name string
	// DNSNames are the names and addresses clients use to reach this
	// node's API: the shared --api-name values first (the first one goes
	// into tokens as the CA URL), then the node's own addresses.
	DNSNames []string
	// OUs written into issued certificates.
	AgentOU, BouncerOU, NodeOU, AdminOU string
	// Lifetimes of issued certificates and default token lifetime.
	ClientCertTTL, NodeCertTTL, TokenTTL time.Duration
	// CRLValidity is the CRL's nextUpdate distance.
	CRLValidity time.Duration
	// ApplyTimeout bounds one raft write (default 15 s).
	ApplyTimeout time.Duration
	// GossipKey, for Bootstrap only: the key to store when the cluster has
	// none yet (nil: a random 32-byte key). The first node uses this to
	// start gossip with a key before raft exists.
	GossipKey []byte
	Logger    *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.AgentOU == "" {
		o.AgentOU = DefaultAgentOU
	}
	if o.BouncerOU == "" {
		o.BouncerOU = DefaultBouncerOU
	}
	if o.NodeOU == "" {
		o.NodeOU = DefaultNodeOU
	}
	if o.AdminOU == "" {
		o.AdminOU = DefaultAdminOU
	}
	if o.ClientCertTTL <= 0 {
		o.ClientCertTTL = DefaultClientCertTTL
	}
	if o.NodeCertTTL <= 0 {
		o.NodeCertTTL = DefaultNodeCertTTL
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.CRLValidity <= 0 {
		o.CRLValidity = DefaultCRLValidity
	}
	if o.ApplyTimeout <= 0 {
		o.ApplyTimeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// material is the CA as stored under pki:ca. Private keys are PKCS#8 DER;
// the FSM is the cluster's trust store.
type material struct {
	Version          int             `json:"v"`
	RootCert         []byte          `json:"root_cert"`
	RootKey          []byte          `json:"root_key"`
	IntermediateCert []byte          `json:"intermediate_cert"`
	IntermediateKey  []byte          `json:"intermediate_key"`
	JWK              json.RawMessage `json:"jwk"` // provisioner private key
}

// Bootstrap creates the cluster's root and intermediate CA, the
// provisioner key and the gossip key, once. It is idempotent and safe when
// several nodes race: each value is written with IfAbsent, the first
// writer wins and the others' material is discarded.
func Bootstrap(ctx context.Context, store Store, ap Applier, opts Options) error {
	opts = opts.withDefaults()
	if !Ready(store) {
		m, err := newMaterial(opts.Name, time.Now())
		if err != nil {
			return err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := setConfig(ctx, ap, KeyCA, b, true); err != nil {
			return fmt.Errorf("store CA: %w", err)
		}
	}
	if len(store.Config(KeyGossipKey)) == 0 {
		key := opts.GossipKey
		if len(key) == 0 {
			key = make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return err
			}
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossip key must be 16, 24 or 32 bytes, not %d", len(key))
		}
		if _, err := setConfig(ctx, ap, KeyGossipKey, key, true); err != nil {
			return fmt.Errorf("store gossip key: %w", err)
		}
	}
	if !Ready(store) {
		return ErrNotBootstrapped
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func newMaterial(name string, now time.Time) (*material, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	jwkKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := randomSerial()
	if err != nil {
		return nil, err
	}
	rootTpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name + " Root CA", Organization: []string{name}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTpl, rootTpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	if sn, err = randomSerial(); err != nil {
		return nil, err
	}
	interTpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name + " Intermediate CA", Organization: []string{name}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	rootKeyDER, err := x509.MarshalPKCS8PrivateKey(rootKey)
	if err != nil {
		return nil, err
	}
	interKeyDER, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		return nil, err
	}
	jwk := jose.JSONWebKey{Key: jwkKey, Algorithm: "ES256", Use: "sig"}
	if jwk.KeyID, err = jose.Thumbprint(&jwk); err != nil {
		return nil, err
	}
	jwkJSON, err := jwk.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &material{Version: 1, RootCert: rootDER, RootKey: rootKeyDER, IntermediateCert: interDER,
		IntermediateKey: interKeyDER, JWK: jwkJSON}, nil
}

// CA is the cluster's certificate authority as seen from one node: a
// step-ca authority in process whose database is the FSM. Every node can
// build one and issue, renew, revoke and check revocation.
type CA struct {
	opts  Options
	store Store
	apply Applier
	log   *slog.Logger

	db       *authDB
	auth     *authority.Authority
	prov     *provisioner.JWK
	jwk      *jose.JSONWebKey // private
	root     *x509.Certificate
	inter    *x509.Certificate
	interKey crypto.Signer
	rootPEM  []byte
	fp       string
	roots    *x509.CertPool

	crlMu       sync.Mutex
	handlerOnce sync.Once
	handler     http.Handler
}

// leafTemplate is the provisioner's certificate template: the OU and the
// extended key usages come from the "halapi" claim of the token, which
// only halapi can sign. A token without it cannot produce a certificate.
const leafTemplate = `{{- $h := .Token.halapi }}
{{- if not $h }}{{ fail "halapi: the token carries no role" }}{{ end -}}
{
	"subject": {"commonName": {{ toJson .Subject.CommonName }}, "organizationalUnit": [{{ toJson $h.ou }}]},
	"sans": {{ toJson .SANs }},
{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
	"keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
	"keyUsage": ["digitalSignature"],
{{- end }}
{{- if eq (toString $h.role) "node" }}
	"extKeyUsage": ["serverAuth", "clientAuth"]
{{- else }}
	"extKeyUsage": ["clientAuth"]
{{- end }}
}`

// New builds this node's view of the CA from the FSM (ErrNotBootstrapped
// until pki:ca has been replicated here). Close releases it.
func New(store Store, ap Applier, opts Options) (*CA, error) {
	opts = opts.withDefaults()
	raw := store.Config(KeyCA)
	if len(raw) == 0 {
		return nil, ErrNotBootstrapped
	}
	var m material
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("pki: decode CA: %w", err)
	}
	c := &CA{opts: opts, store: store, apply: ap, log: opts.Logger}
	var err error
	if c.root, err = x509.ParseCertificate(m.RootCert); err != nil {
		return nil, fmt.Errorf("pki: root certificate: %w", err)
	}
	if c.inter, err = x509.ParseCertificate(m.IntermediateCert); err != nil {
		return nil, fmt.Errorf("pki: intermediate certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(m.IntermediateKey)
	if err != nil {
		return nil, fmt.Errorf("pki: intermediate key: %w", err)
	}
	var ok bool
	if c.interKey, ok = k.(crypto.Signer); !ok {
		return nil, errors.New("pki: intermediate key is not a signer")
	}
	c.jwk = new(jose.JSONWebKey)
	if err := c.jwk.UnmarshalJSON(m.JWK); err != nil {
		return nil, fmt.Errorf("pki: provisioner key: %w", err)
	}
	pub := c.jwk.Public()
	c.rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw})
	sum := sha256.Sum256(c.root.Raw)
	c.fp = hex.EncodeToString(sum[:])
	c.roots = x509.NewCertPool()
	c.roots.AddCert(c.root)

	c.db = &authDB{store: store, apply: ap, timeout: opts.ApplyTimeout, now: time.Now}
	maxTTL := opts.ClientCertTTL
	if opts.NodeCertTTL > maxTTL {
		maxTTL = opts.NodeCertTTL
	}
	// The shortest certificate the provisioner signs: 5 minutes, or less
	// when the operator asked for shorter node or client certificates.
	minTTL := min(5*time.Minute, opts.ClientCertTTL, opts.NodeCertTTL)
	no := false
	c.prov = &provisioner.JWK{
		Type: "JWK",
		Name: opts.Name,
		Key:  &pub,
		Claims: &provisioner.Claims{
			MinTLSDur:     &provisioner.Duration{Duration: minTTL},
			MaxTLSDur:     &provisioner.Duration{Duration: maxTTL},
			DefaultTLSDur: &provisioner.Duration{Duration: opts.ClientCertTTL},
			EnableSSHCA:   &no,
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: leafTemplate}},
	}
	names := append([]string(nil), opts.DNSNames...)
	if len(names) == 0 {
		names = []string{"localhost"}
	}
	cfg := &config.Config{
		DNSNames: names,
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{c.prov},
			// Tokens minted on one node are used on others that may have
			// started later; reuse is prevented by the FSM instead.
			DisableIssuedAtCheck: true,
		},
		CRL: &config.CRLConfig{Enabled: true, CacheDuration: &provisioner.Duration{Duration: opts.CRLValidity}},
	}
	c.auth, err = authority.NewEmbedded(
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(c.root),
		authority.WithX509Signer(c.inter, c.interKey),
		authority.WithDatabase(c.db),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("pki: start authority: %w", err)
	}
	p, err := c.auth.LoadProvisionerByName(opts.Name)
	if err != nil {
		c.auth.Shutdown()
		return nil, err
	}
	if c.prov, ok = p.(*provisioner.JWK); !ok {
		c.auth.Shutdown()
		return nil, fmt.Errorf("pki: provisioner %q has type %T", opts.Name, p)
	}
	return c, nil
}

// Close stops the authority's background CRL refresh.
func (c *CA) Close() error { return c.auth.Shutdown() }

// RootPEM returns the root certificate, PEM.
func (c *CA) RootPEM() []byte { return append([]byte(nil), c.rootPEM...) }

// Root returns the root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// Intermediate returns the intermediate certificate.
func (c *CA) Intermediate() *x509.Certificate { return c.inter }

// Fingerprint is the SHA-256 of the root certificate's DER, lower-case
// hex, as `step certificate fingerprint` prints it.
func (c *CA) Fingerprint() string { return c.fp }

// RootPool is a pool holding the root.
func (c *CA) RootPool() *x509.CertPool { return c.roots.Clone() }

func (c *CA) ouFor(r Role) (string, error) {
	switch r {
	case RoleAgent:
		return c.opts.AgentOU, nil
	case RoleBouncer:
		return c.opts.BouncerOU, nil
	case RoleNode:
		return c.opts.NodeOU, nil
	case RoleAdmin:
		return c.opts.AdminOU, nil
	}
	return "", fmt.Errorf("unknown role %q", r)
}

// tokenClaims is a step JWK one-time token plus halapi's role claim.
type tokenClaims struct {
	jose.Claims
	SANs   []string   `json:"sans,omitempty"`
	SHA    string     `json:"sha,omitempty"`
	Halapi *roleClaim `json:"halapi,omitempty"`
}

type roleClaim struct {
	Role string `json:"role"`
	OU   string `json:"ou"`
}

func validName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > 64 {
		return errors.New("name longer than 64 characters")
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f || r == '/' || r == '\\' {
			return fmt.Errorf("name %q contains a space, a control character or a slash", s)
		}
	}
	return nil
}

func (c *CA) audiences() []string {
	aud := []string{}
	if len(c.opts.DNSNames) > 0 {
		host := c.opts.DNSNames[0]
		if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			host = "[" + host + "]"
		}
		aud = append(aud, "https://"+host+"/1.0/sign")
	}
	return append(aud, legacyAudience)
}

func (c *CA) mint(subject string, role Role, sans []string, ttl time.Duration) (string, error) {
	ou, err := c.ouFor(role)
	if err != nil {
		return "", err
	}
	if len(sans) == 0 {
		sans = []string{subject}
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	now := time.Now()
	claims := tokenClaims{
		Claims: jose.Claims{
			ID:        hex.EncodeToString(jti),
			Issuer:    c.opts.Name,
			Subject:   subject,
			Audience:  c.audiences(),
			IssuedAt:  jose.NewNumericDate(now),
			NotBefore: jose.NewNumericDate(now),
			Expiry:    jose.NewNumericDate(now.Add(ttl)),
		},
		SANs:   sans,
		SHA:    c.fp,
		Halapi: &roleClaim{Role: string(role), OU: ou},
	}
	so := new(jose.SignerOptions).WithType("JWT").WithHeader("kid", c.jwk.KeyID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(c.jwk.Algorithm), Key: c.jwk.Key}, so)
	if err != nil {
		return "", err
	}
	return jose.Signed(signer).Claims(claims).CompactSerialize()
}

// NewToken mints a one-time token (a step JWK provisioning token) that
// lets its holder get one certificate for subject with the role's OU from
// any node, through `step ca certificate` or `halapi agent enroll`. ttl 0
// means Options.TokenTTL. The token is a secret: do not log it.
func (c *CA) NewToken(subject string, role Role, ttl time.Duration) (string, error) {
	if role != RoleAgent && role != RoleBouncer {
		return "", fmt.Errorf("tokens are for agents and bouncers, not %q", role)
	}
	if err := validName(subject); err != nil {
		return "", err
	}
	if ttl <= 0 {
		ttl = c.opts.TokenTTL
	}
	return c.mint(subject, role, nil, ttl)
}

// sign issues a certificate for the key through the provisioner, exactly
// as a /sign request with a halapi token would, without spending a token.
func (c *CA) sign(ctx context.Context, role Role, cn string, sans []string, key crypto.Signer, ttl time.Duration) ([]*x509.Certificate, error) {
	tok, err := c.mint(cn, role, sans, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	if len(sans) == 0 {
		sans = []string{cn}
	}
	signOpts, err := c.prov.AuthorizeSign(ctx, tok)
	if err != nil {
		return nil, err
	}
	csr, err := x509util.CreateCertificateRequest(cn, sans, key)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return c.auth.SignWithContext(ctx, csr, provisioner.SignOptions{
		NotBefore: provisioner.NewTimeDuration(now),
		NotAfter:  provisioner.NewTimeDuration(now.Add(ttl)),
	}, signOpts...)
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func chainPEM(chain []*x509.Certificate) []byte {
	var out []byte
	for _, crt := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crt.Raw})...)
	}
	return out
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// issueNodePEM issues a node certificate and returns chain and key PEM.
func (c *CA) issueNodePEM(ctx context.Context, nodeID string, sans []string) (certPEM, kPEM []byte, err error) {
	if err := validName(nodeID); err != nil {
		return nil, nil, err
	}
	sans = dedupe(append([]string{nodeID}, sans...))
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	chain, err := c.sign(ctx, RoleNode, nodeID, sans, key, c.opts.NodeCertTTL)
	if err != nil {
		return nil, nil, err
	}
	kPEM, err = keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return chainPEM(chain), kPEM, nil
}

// IssueServer issues this node's certificate: CN nodeID, OU NodeOU, SANs
// nodeID plus sans (addresses and shared API names), usable as TLS server
// and client certificate; the chain includes the intermediate.
func (c *CA) IssueServer(nodeID string, sans []string) (tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ApplyTimeout)
	defer cancel()
	certPEM, kPEM, err := c.issueNodePEM(ctx, nodeID, sans)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, kPEM)
}

// IssueClient issues an agent, bouncer or admin client certificate for
// name (the CN, which CrowdSec uses as the identity; an admin's is the
// console's signed-in name). certPEM holds the leaf and the intermediate;
// keyPEM is PKCS#8; serial is decimal.
func (c *CA) IssueClient(role Role, name string) (certPEM, kPEM []byte, serial string, err error) {
	if role != RoleAgent && role != RoleBouncer && role != RoleAdmin {
		return nil, nil, "", fmt.Errorf("client certificates are for agents, bouncers and admins, not %q", role)
	}
	if err := validName(name); err != nil {
		return nil, nil, "", err
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ApplyTimeout)
	defer cancel()
	chain, err := c.sign(ctx, role, name, nil, key, c.opts.ClientCertTTL)
	if err != nil {
		return nil, nil, "", err
	}
	if kPEM, err = keyPEM(key); err != nil {
		return nil, nil, "", err
	}
	return chainPEM(chain), kPEM, chain[0].SerialNumber.String(), nil
}

var reasonCodes = map[string]int{
	"unspecified":          0,
	"keycompromise":        1,
	"cacompromise":         2,
	"affiliationchanged":   3,
	"superseded":           4,
	"cessationofoperation": 5,
	"certificatehold":      6,
	"privilegewithdrawn":   9,
}

// ReasonCode maps a reason such as "key-compromise" or "superseded" to its
// RFC 5280 code; free text is code 0 (unspecified).
func ReasonCode(reason string) int {
	k := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(reason))
	return reasonCodes[k]
}

// Revoke revokes a certificate this CA issued (serial in decimal, 0x-hex
// or colon-hex). The revocation is one raft write; every node refuses the
// certificate as soon as it has applied it.
func (c *CA) Revoke(ctx context.Context, serial, reason string) error {
	sn, err := NormalizeSerial(serial)
	if err != nil {
		return err
	}
	crt, err := c.db.GetCertificate(sn)
	if err != nil {
		return ErrUnknownCert
	}
	if IsRevokedIn(c.store, sn) {
		return ErrAlreadyRevoked
	}
	rec := revokedRecord{Serial: sn, ProvisionerID: c.prov.GetID(), ReasonCode: ReasonCode(reason), Reason: reason,
		RevokedAt: time.Now().UTC(), ExpiresAt: crt.NotAfter.UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	won, err := setConfig(ctx, c.apply, prefixRevoked+sn, b, true)
	if err != nil {
		return err
	}
	if !won {
		return ErrAlreadyRevoked
	}
	return nil
}

// RevokeName revokes every unexpired, unrevoked certificate whose CN is
// name and returns their serials.
func (c *CA) RevokeName(ctx context.Context, name, reason string) ([]string, error) {
	var done []string
	now := time.Now()
	for _, ci := range c.List() {
		if ci.Name != name || ci.Revoked || now.After(ci.NotAfter) {
			continue
		}
		if err := c.Revoke(ctx, ci.Serial, reason); err != nil && !errors.Is(err, ErrAlreadyRevoked) {
			return done, err
		}
		done = append(done, ci.Serial)
	}
	return done, nil
}

// IsRevoked reports whether the serial (any accepted form) is revoked.
func (c *CA) IsRevoked(serial string) bool {
	sn, err := NormalizeSerial(serial)
	if err != nil {
		return false
	}
	return IsRevokedIn(c.store, sn)
}

// CertInfo describes an issued certificate.
type CertInfo struct {
	Serial    string    `json:"serial"`
	Name      string    `json:"name"`
	Role      Role      `json:"role,omitempty"`
	OU        []string  `json:"ou,omitempty"`
	SANs      []string  `json:"sans,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

func (c *CA) roleOf(ous []string) Role {
	for _, ou := range ous {
		switch ou {
		case c.opts.AgentOU:
			return RoleAgent
		case c.opts.BouncerOU:
			return RoleBouncer
		case c.opts.NodeOU:
			return RoleNode
		case c.opts.AdminOU:
			return RoleAdmin
		}
	}
	return ""
}

// List returns every certificate recorded in the FSM, oldest first.
func (c *CA) List() []CertInfo {
	certs := c.store.ConfigPrefix(prefixCert)
	revs := c.store.ConfigPrefix(prefixRevoked)
	out := make([]CertInfo, 0, len(certs))
	for k, v := range certs {
		var rec certRecord
		if json.Unmarshal(v, &rec) != nil {
			continue
		}
		crt, err := x509.ParseCertificate(rec.DER)
		if err != nil {
			continue
		}
		ci := CertInfo{Serial: strings.TrimPrefix(k, prefixCert), Name: crt.Subject.CommonName,
			OU: crt.Subject.OrganizationalUnit, Role: c.roleOf(crt.Subject.OrganizationalUnit),
			NotBefore: crt.NotBefore.UTC(), NotAfter: crt.NotAfter.UTC()}
		ci.SANs = append(ci.SANs, crt.DNSNames...)
		for _, ip := range crt.IPAddresses {
			ci.SANs = append(ci.SANs, ip.String())
		}
		ci.SANs = append(ci.SANs, crt.EmailAddresses...)
		for _, u := range crt.URIs {
			ci.SANs = append(ci.SANs, u.String())
		}
		if rv, ok := revs[prefixRevoked+ci.Serial]; ok {
			ci.Revoked = true
			var r revokedRecord
			if json.Unmarshal(rv, &r) == nil {
				ci.RevokedAt, ci.Reason = r.RevokedAt, r.Reason
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].Serial < out[j].Serial
	})
	return out
}

// CRL returns the combined CRL (DER) of every revocation in the FSM,
// signed by the intermediate. It is regenerated on demand when the
// revocation set changed or a third of its validity is left, so every
// node serves a CRL that covers every revocation it has applied.
func (c *CA) CRL() ([]byte, error) {
	info, err := c.freshCRL()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), info.DER...), nil
}

func (c *CA) freshCRL() (*db.CertificateRevocationListInfo, error) {
	c.crlMu.Lock()
	defer c.crlMu.Unlock()
	_, version := c.db.revocations()
	cached, cachedVersion := c.db.cachedCRL()
	if cached == nil || cachedVersion != version || len(cached.DER) == 0 ||
		time.Until(cached.ExpiresAt) < c.opts.CRLValidity/3 {
		if err := c.auth.GenerateCertificateRevocationList(); err != nil {
			return nil, fmt.Errorf("pki: generate CRL: %w", err)
		}
		cached, _ = c.db.cachedCRL()
	}
	if cached == nil {
		return nil, errors.New("pki: no CRL")
	}
	return cached, nil
}

// Prune deletes PKI records that can no longer matter: used-token and
// join-token records past their expiry, certificates expired more than
// grace ago and their revocations. Run it on the leader now and then.
func (c *CA) Prune(ctx context.Context, grace time.Duration) (int, error) {
	now := time.Now()
	n := 0
	del := func(key string) error {
		if _, err := setConfig(ctx, c.apply, key, nil, false); err != nil {
			return err
		}
		n++
		return nil
	}
	for k, v := range c.store.ConfigPrefix(prefixToken) {
		var t usedToken
		if json.Unmarshal(v, &t) == nil && t.Exp > 0 && now.After(time.Unix(t.Exp, 0).Add(grace)) {
			if err := del(k); err != nil {
				return n, err
			}
		}
	}
	for k, v := range c.store.ConfigPrefix(prefixJoin) {
		var j joinRecord
		if json.Unmarshal(v, &j) == nil && now.After(time.Unix(j.Exp, 0).Add(grace)) {
			h := strings.TrimPrefix(k, prefixJoin)
			if err := del(k); err != nil {
				return n, err
			}
			if len(c.store.Config(prefixJoinUsed+h)) > 0 {
				if err := del(prefixJoinUsed + h); err != nil {
					return n, err
				}
			}
		}
	}
	for k, v := range c.store.ConfigPrefix(prefixCert) {
		var rec certRecord
		if json.Unmarshal(v, &rec) != nil {
			continue
		}
		crt, err := x509.ParseCertificate(rec.DER)
		if err != nil || !now.After(crt.NotAfter.Add(grace)) {
			continue
		}
		sn := strings.TrimPrefix(k, prefixCert)
		if IsRevokedIn(c.store, sn) {
			if err := del(prefixRevoked + sn); err != nil {
				return n, err
			}
		}
		if err := del(k); err != nil {
			return n, err
		}
	}
	return n, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0:0]
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// unverifiedExpiry reads a JWT's exp without checking the signature (the
// caller has already verified it).
func unverifiedExpiry(tok string) time.Time {
	t, err := jose.ParseSigned(tok)
	if err != nil {
		return time.Time{}
	}
	var cl jose.Claims
	if err := t.UnsafeClaimsWithoutVerification(&cl); err != nil || cl.Expiry == nil {
		return time.Time{}
	}
	return cl.Expiry.Time()
}
