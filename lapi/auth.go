package lapi

import (
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/halapi/halapi/fsm"
)

type ctxKey int

const (
	ctxMachine ctxKey = iota
	ctxBouncer
)

const (
	realmHeader  = "JWT realm=Crowdsec API local"
	maxGzipLayer = 4
)

// jwtErr writes the JWT layer's error shape: {"code":N,"message":...}.
func jwtErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("WWW-Authenticate", realmHeader)
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}

// issueToken signs a token for machine m. Claims: id, exp, orig_iat (the
// login time, kept across refreshes), gen (credGen) and, for a certificate
// login, cnf.x5t#S256 (the certificate it is bound to). A token never
// outlives orig_iat + TokenMaxAge.
func (s *Server) issueToken(m *fsm.Machine, origIat time.Time, thumb string) (string, time.Time, error) {
	key := s.fsm.JWTKey()
	if len(key) == 0 {
		return "", time.Time{}, errors.New("cluster secrets are not initialised yet")
	}
	exp := s.now().Add(s.tokenTTL())
	if limit := origIat.Add(s.tokenMaxAge()); exp.After(limit) {
		exp = limit
	}
	claims := jwt.MapClaims{"id": m.ID, "exp": exp.Unix(), "orig_iat": origIat.Unix(), "gen": credGen(m)}
	if thumb != "" {
		claims["cnf"] = map[string]any{"x5t#S256": thumb}
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	return signed, exp, err
}

func (s *Server) tokenTTL() time.Duration {
	if s.cfg.TokenTTL > 0 {
		return s.cfg.TokenTTL
	}
	return time.Hour
}

func (s *Server) tokenMaxAge() time.Duration {
	if s.cfg.TokenMaxAge > 0 {
		return s.cfg.TokenMaxAge
	}
	return 2 * time.Hour
}

// tokenFromRequest follows CrowdSec's lookup order: header, query, cookie.
// The message is the one of the last lookup that failed.
func tokenFromRequest(r *http.Request) (string, string) {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && scheme == "Bearer" && tok != "" {
			return tok, ""
		}
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t, ""
	}
	if c, err := r.Cookie("jwt"); err == nil && c.Value != "" {
		return c.Value, ""
	}
	return "", "cookie token is empty"
}

// parseToken validates a token; allowExpired is for refresh.
func (s *Server) parseToken(raw string, allowExpired bool) (jwt.MapClaims, int, error) {
	key := s.fsm.JWTKey()
	if len(key) == 0 {
		return nil, http.StatusUnauthorized, errors.New("cluster secrets are not initialised yet")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(s.now)}
	if allowExpired {
		opts = append(opts, jwt.WithoutClaimsValidation())
	} else {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return key, nil }, opts...)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenRequiredClaimMissing) {
			return nil, http.StatusBadRequest, errors.New("missing exp field")
		}
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, http.StatusUnauthorized, errors.New("token is expired")
		}
		return nil, http.StatusUnauthorized, err
	}
	if _, ok := claims["id"].(string); !ok {
		return nil, http.StatusUnauthorized, errors.New("token has no machine id")
	}
	return claims, 0, nil
}

// jwt protects machine routes. Unlike the reference, which trusts the id
// claim, every request checks the token against the machine's current
// credentials (tokenRefusal), confirmed against the leader before a 401.
func (s *Server) jwt(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, msg := tokenFromRequest(r)
		if raw == "" {
			jwtErr(w, http.StatusUnauthorized, msg)
			return
		}
		claims, status, err := s.parseToken(raw, false)
		if err != nil {
			jwtErr(w, status, err.Error())
			return
		}
		id := claims["id"].(string)
		if msg := s.confirmedTokenRefusal(r, claims, id); msg != "" {
			jwtErr(w, http.StatusUnauthorized, msg)
			return
		}
		s.metrics.machineRequest(id, r)
		next(w, r.WithContext(context.WithValue(r.Context(), ctxMachine, id)))
	}
}

func machineID(r *http.Request) string {
	id, _ := r.Context().Value(ctxMachine).(string)
	return id
}

func bouncerOf(r *http.Request) *fsm.Bouncer {
	b, _ := r.Context().Value(ctxBouncer).(*fsm.Bouncer)
	return b
}

// HashKey is how bouncer API keys are stored: hex SHA-512.
func HashKey(key string) string {
	sum := sha512.Sum512([]byte(key))
	return hex.EncodeToString(sum[:])
}

// keyHashes caches HashKey for the keys bouncers present (a bouncer polls
// with the same key every few seconds; hashing it each time was a tenth of
// a query's CPU). Only keys that matched a bouncer are kept, so what an
// anonymous client sends is never stored; bounded: cleared when full.
type keyHashes struct {
	mu sync.RWMutex
	m  map[string]string
}

const maxCachedKeys = 4096

// get returns the cached hash of a verified key, or "".
func (k *keyHashes) get(key string) string {
	k.mu.RLock()
	h := k.m[key]
	k.mu.RUnlock()
	return h
}

// put caches the hash of a key that matched a bouncer.
func (k *keyHashes) put(key, h string) {
	k.mu.Lock()
	if k.m == nil || len(k.m) >= maxCachedKeys {
		k.m = map[string]string{}
	}
	k.m[key] = h
	k.mu.Unlock()
}

var errForbidden = errors.New("access forbidden")

// bouncer protects bouncer routes (X-Api-Key).
func (s *Server) bouncer(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := s.authBouncer(r)
		if err != nil && s.confirmRefusal(r.Context()) {
			b, err = s.authBouncer(r) // the key may be newer than this node's copy
		}
		if err != nil {
			writeErr(w, http.StatusForbidden, err.Error())
			return
		}
		s.metrics.bouncerRequest(b.Name, r)
		next(w, r.WithContext(context.WithValue(r.Context(), ctxBouncer, b)))
	}
}

// authBouncer identifies the bouncer behind a request (lapi.md §2.3).
func (s *Server) authBouncer(r *http.Request) (*fsm.Bouncer, error) {
	if s.hasClientCert(r) {
		return s.bouncerWithCert(r)
	}
	vals := r.Header.Values("X-Api-Key")
	if len(vals) == 0 {
		return nil, errForbidden
	}
	key := vals[0]
	if len(key) > MaxAPIKeyLen {
		return nil, errForbidden
	}
	h := s.keyHashes.get(key)
	cached := h != ""
	if !cached {
		h = HashKey(key)
	}
	list := s.fsm.BouncersByKey(h)
	if !cached && len(list) > 0 {
		s.keyHashes.put(key, h)
	}
	if r.Method == http.MethodHead {
		for _, b := range list {
			if b.AuthType == fsm.AuthAPIKey {
				return b, nil
			}
		}
		return nil, errForbidden
	}
	ip := clientIP(r)
	var keyed []*fsm.Bouncer
	for _, b := range list {
		if b.IP == ip {
			if b.AuthType != fsm.AuthAPIKey {
				return nil, errForbidden
			}
			return s.bouncerSeen(r, b), nil
		}
		if b.AuthType == fsm.AuthAPIKey {
			keyed = append(keyed, b)
		}
	}
	if len(keyed) == 0 {
		return nil, errForbidden
	}
	if len(keyed) == 1 && keyed[0].IP == "" {
		return s.bouncerSeen(r, keyed[0]), nil
	}
	// One key shared by several hosts: one row (and one cursor) per IP.
	base := stripIPSuffixes(keyed[0].Name)
	name := base + "@" + ip
	if existing := s.fsm.Bouncer(name); existing != nil {
		return nil, errForbidden
	}
	nb := fsm.Bouncer{Name: name, KeyHash: h, IP: ip, AuthType: fsm.AuthAPIKey, AutoCreated: true}
	nb.Type, nb.Version = splitUA(r.UserAgent())
	if _, err := s.apply(r.Context(), fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: nb}); err != nil {
		// a concurrent first request from the same host may have created
		// the same row meanwhile
		if b := s.fsm.Bouncer(name); b != nil && b.KeyHash == h && b.IP == ip && b.AuthType == fsm.AuthAPIKey {
			return b, nil
		}
		s.log.Warn("cannot create bouncer row for shared key", "bouncer", name, "err", err)
		return nil, errForbidden
	}
	if b := s.fsm.Bouncer(name); b != nil {
		return b, nil
	}
	return nil, errForbidden
}

// bouncerSeen records first-contact IP and user-agent changes. These are
// rare; they are written at once. A failed write (no leader) does not
// refuse the bouncer: reads must keep working without a quorum.
func (s *Server) bouncerSeen(r *http.Request, b *fsm.Bouncer) *fsm.Bouncer {
	ua := r.UserAgent()
	if b.IP != "" && uaIs(ua, b.Type, b.Version) {
		return b // the common case of every poll: nothing to record, nothing to allocate
	}
	ip := clientIP(r)
	typ, ver := splitUA(ua)
	upd := fsm.BouncerUpdate{Name: b.Name}
	changed := false
	if b.IP == "" {
		upd.IP = &ip
		changed = true
	}
	if typ != b.Type || ver != b.Version {
		upd.Type, upd.Version = &typ, &ver
		changed = true
	}
	if !changed {
		return b
	}
	if _, err := s.apply(r.Context(), fsm.CmdBouncerUpdate, upd); err != nil {
		s.log.Warn("cannot record bouncer details", "bouncer", b.Name, "err", err)
		return b
	}
	if nb := s.fsm.Bouncer(b.Name); nb != nil {
		return nb
	}
	return b
}

// uaIs reports whether splitUA(ua) would give typ, ver, without allocating.
func uaIs(ua, typ, ver string) bool {
	if ver == "N/A" && ua == typ && strings.Count(ua, "/") != 1 {
		return true
	}
	return len(ua) == len(typ)+1+len(ver) && strings.HasPrefix(ua, typ) && ua[len(typ)] == '/' &&
		strings.HasSuffix(ua, ver) && strings.Count(ua, "/") == 1
}

func splitUA(ua string) (string, string) {
	parts := strings.Split(ua, "/")
	if len(parts) == 2 {
		return parts[0], parts[1]
	}
	return ua, "N/A"
}

func stripIPSuffixes(name string) string {
	for {
		i := strings.LastIndexByte(name, '@')
		if i < 0 {
			return name
		}
		if _, err := fsm.ParseRange(name[i+1:]); err != nil || strings.Contains(name[i+1:], "/") {
			return name
		}
		name = name[:i]
	}
}

// either routes usage metrics to bouncer or machine auth (lapi.md §2.5).
func (s *Server) either(next http.HandlerFunc) http.HandlerFunc {
	j, b := s.jwt(next), s.bouncer(next)
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("X-Api-Key") != "":
			b(w, r)
		case r.Header.Get("Authorization") != "", strings.HasPrefix(r.UserAgent(), "crowdsec/"):
			j(w, r)
		default:
			b(w, r)
		}
	}
}

// trusted gates alert deletion to loopback and trusted_ips.
func (s *Server) trusted(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ip := clientIP(r)
		if !s.isTrusted(ip) {
			writeErr(w, http.StatusForbidden, fmt.Sprintf("access forbidden from this IP (%s)", ip))
			return
		}
		next(w, r)
	}
}

func (s *Server) isTrusted(ip string) bool {
	if ip == "127.0.0.1" || ip == "::1" {
		return true
	}
	r, err := fsm.ParseRange(ip)
	if err != nil {
		return false
	}
	for _, p := range s.cfg.TrustedIPs {
		pr, err := fsm.ParseRange(p.String())
		if err == nil && pr.Contains(r) {
			return true
		}
	}
	return false
}

// gunzip decodes gzip request bodies (stacked layers allowed) and bounds
// every body.
func (s *Server) gunzip(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ce := r.Header.Get("Content-Encoding"); ce != "" {
			codings := strings.Split(ce, ",")
			if len(codings) > maxGzipLayer {
				writeErr(w, http.StatusUnsupportedMediaType, "too many content encodings")
				return
			}
			var body io.Reader = r.Body
			for _, c := range codings {
				c = strings.TrimSpace(strings.ToLower(c))
				if c != "gzip" && c != "x-gzip" {
					writeErr(w, http.StatusUnsupportedMediaType, "unsupported content encoding "+c)
					return
				}
				zr, err := gzip.NewReader(body)
				if err != nil {
					writeErr(w, http.StatusBadRequest, "invalid gzip body: "+err.Error())
					return
				}
				body = zr
			}
			r.Body = io.NopCloser(body)
			r.Header.Del("Content-Encoding")
			r.ContentLength = -1
		}
		if s.cfg.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &depthReader{r: r.Body, max: maxJSONDepth}
		}
		next.ServeHTTP(w, r)
	})
}
