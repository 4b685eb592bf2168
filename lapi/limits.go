package lapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on what an anonymous client controls (docs/design/anon.md has the
// table). Identifiers and secrets are checked before anything is hashed,
// stored or replicated.
const (
	// MaxMachineIDLen: cscli generates 48-character ids, TLS identities
	// are <CN>@<ip> (CN ≤ 64 by RFC 5280); 255 is the SQL column CrowdSec
	// stores them in.
	MaxMachineIDLen = 255
	// MaxPasswordLen is bcrypt's limit: longer passwords cannot be hashed.
	MaxPasswordLen = 72
	// MaxAPIKeyLen bounds X-Api-Key: cscli's keys are 32 characters and a
	// key given with --key is a human-chosen string.
	MaxAPIKeyLen = 512
	// MaxHeaderBytes bounds the request line and headers (net/http's
	// default is 1 MiB).
	MaxHeaderBytes = 64 << 10
	// maxAnonBody bounds the bodies of the unauthenticated routes
	// (register, login): a login carries the agent's scenario names.
	maxAnonBody = 1 << 20
	// maxJSONDepth bounds the nesting of every decoded body; the deepest
	// CrowdSec shape (usage metrics: payload, components, metrics, items,
	// labels) nests 8 levels.
	maxJSONDepth = 32
)

// ValidateMachineID checks a machine id given by a client or an operator:
// 1 to MaxMachineIDLen bytes of printable UTF-8 without whitespace (so
// `machines list` never prints a terminal escape, and ids are one word).
func ValidateMachineID(id string) error {
	if id == "" {
		return errors.New("machine_id must not be empty")
	}
	if len(id) > MaxMachineIDLen {
		return fmt.Errorf("machine_id is %d bytes long, the limit is %d", len(id), MaxMachineIDLen)
	}
	if !utf8.ValidString(id) {
		return errors.New("machine_id is not valid UTF-8")
	}
	for _, r := range id {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("machine_id must not contain whitespace or control characters (found %q)", r)
		}
	}
	return nil
}

// limitKey is the address a per-source limit is keyed on: the address
// itself for IPv4, its /64 for IPv6 (one host usually owns a whole /64).
func limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// boundedMap is the storage of the keyed limiters: at most max entries;
// when full, entries idle for longer than forget are dropped, then
// arbitrary ones (map order), so a flood of new keys costs the flooder's
// own entries as much as anyone's.
type boundedMap[V any] struct {
	m      map[string]*V
	last   map[string]time.Time
	max    int
	forget time.Duration
}

func newBoundedMap[V any](max int, forget time.Duration) boundedMap[V] {
	return boundedMap[V]{m: map[string]*V{}, last: map[string]time.Time{}, max: max, forget: forget}
}

func (b *boundedMap[V]) get(key string, now time.Time, create bool) *V {
	v, ok := b.m[key]
	if !ok {
		if !create {
			return nil
		}
		if len(b.m) >= b.max {
			b.prune(now)
		}
		v = new(V)
		b.m[key] = v
	}
	b.last[key] = now
	return v
}

func (b *boundedMap[V]) del(key string) {
	delete(b.m, key)
	delete(b.last, key)
}

func (b *boundedMap[V]) prune(now time.Time) {
	for k, t := range b.last {
		if now.Sub(t) > b.forget {
			b.del(k)
		}
	}
	for k := range b.m {
		if len(b.m) < b.max {
			return
		}
		b.del(k)
	}
}

// rateLimiter is a token bucket per key.
type rateLimiter struct {
	mu    sync.Mutex
	every time.Duration // one token per every
	burst int
	m     boundedMap[bucket]
}

type bucket struct {
	tokens float64
	at     time.Time
	used   bool
}

func newRateLimiter(every time.Duration, burst, max int) *rateLimiter {
	return &rateLimiter{every: every, burst: burst, m: newBoundedMap[bucket](max, time.Duration(burst)*every)}
}

// allow takes a token for key; when none is left it returns how long
// until one is.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil || l.burst <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m.get(key, now, true)
	if !b.used {
		b.tokens, b.at, b.used = float64(l.burst), now, true
	}
	if l.every > 0 {
		b.tokens = min(float64(l.burst), b.tokens+float64(now.Sub(b.at))/float64(l.every))
	}
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.every <= 0 {
		return false, time.Hour
	}
	return false, time.Duration((1 - b.tokens) * float64(l.every))
}

// failBackoff tracks failed attempts per key: after free failures, every
// further one blocks the key for base·2^k, at most maxBlock. A key is
// forgotten after forget without a failure.
type failBackoff struct {
	mu       sync.Mutex
	free     int
	base     time.Duration
	maxBlock time.Duration
	m        boundedMap[fails]
}

type fails struct {
	n     int
	last  time.Time
	until time.Time
}

func newFailBackoff(free int, base, maxBlock, forget time.Duration, max int) *failBackoff {
	return &failBackoff{free: free, base: base, maxBlock: maxBlock, m: newBoundedMap[fails](max, forget)}
}

// blocked returns how long key is still blocked (0: not blocked).
func (f *failBackoff) blocked(key string, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m.get(key, now, false)
	if e == nil || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

// fail records a failure of key.
func (f *failBackoff) fail(key string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m.get(key, now, true)
	if !e.last.IsZero() && now.Sub(e.last) > f.m.forget {
		*e = fails{}
	}
	e.n++
	e.last = now
	if over := e.n - f.free; over > 0 {
		d := f.maxBlock
		if over < 20 {
			d = min(f.base<<(over-1), f.maxBlock)
		}
		e.until = now.Add(d)
	}
}

// reset forgets key (a successful login).
func (f *failBackoff) reset(key string) {
	f.mu.Lock()
	f.m.del(key)
	f.mu.Unlock()
}

// retryAfter formats a wait for the Retry-After header (whole seconds,
// at least 1).
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// tooMany answers 429 with Retry-After and CrowdSec's error shape.
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	w.Header().Set("Retry-After", retryAfter(wait))
	writeErr(w, http.StatusTooManyRequests, msg)
}

// depthReader fails the body once JSON nesting exceeds max levels
// (encoding/json's own limit is 10,000, a stack per level).
type depthReader struct {
	r        io.Reader
	depth    int
	max      int
	inString bool
	escaped  bool
	err      error
}

var errTooDeep = fmt.Errorf("JSON nesting deeper than %d levels", maxJSONDepth)

func (d *depthReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if d.err = d.scan(p[:n]); d.err != nil {
		return 0, d.err
	}
	return n, err
}

// jsonClass: 1 quote, 2 opening, 3 closing; everything else 0.
var jsonClass = [256]uint8{'"': 1, '[': 2, '{': 2, ']': 3, '}': 3}

// scan follows the nesting of b (strings skipped with IndexByte, which
// is vectorised: the scan must stay cheap next to decoding).
func (d *depthReader) scan(b []byte) error {
	for i := 0; i < len(b); {
		if d.inString {
			if d.escaped {
				d.escaped = false
				i++
				continue
			}
			rest := b[i:]
			j := bytes.IndexByte(rest, '"')
			if j < 0 {
				j = len(rest)
			}
			if k := bytes.IndexByte(rest[:j], '\\'); k >= 0 {
				d.escaped = true
				i += k + 1
				continue
			}
			if j == len(rest) {
				return nil
			}
			d.inString = false
			i += j + 1
			continue
		}
		switch jsonClass[b[i]] {
		case 1:
			d.inString = true
		case 2:
			if d.depth++; d.depth > d.max {
				return errTooDeep
			}
		case 3:
			d.depth--
		}
		i++
	}
	return nil
}

func (d *depthReader) Close() error {
	if c, ok := d.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// BodyDeadline cuts off request bodies sent slower than minRate bytes/s
// after a grace period: the connection's read deadline is start + grace +
// bytes read so far / minRate, moved forward as the body arrives. A client
// trickling a body is disconnected; an honest upload on any real link is
// not. Headers are bounded by the server's ReadHeaderTimeout.
func BodyDeadline(next http.Handler, grace time.Duration, minRate int64) http.Handler {
	if grace <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now()
		if err := rc.SetReadDeadline(start.Add(grace)); err != nil {
			// not a real connection (tests): nothing to bound
			next.ServeHTTP(w, r)
			return
		}
		br := &deadlineBody{rc: rc, body: r.Body, start: start, grace: grace, rate: minRate}
		r.Body = br
		next.ServeHTTP(w, r)
		if !br.eof && !br.failed {
			// A handler that answered without reading the whole body: the
			// server drains what is left (at most 256 kB, usually a final
			// newline already received) before reading the next request
			// under its own timeouts. A body cut off stays cut off.
			_ = rc.SetReadDeadline(time.Now().Add(min(grace, time.Second)))
		}
	})
}

// BoundOtherBodies bounds the bodies of every request outside /v1/ (the
// step-CA API and the join endpoint: certificate requests and tokens of a
// few kB, decoded by code that does not bound them itself) to limit
// bytes; /v1/ routes bound theirs (Config.MaxBodyBytes, after gunzip).
func BoundOtherBodies(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && !strings.HasPrefix(r.URL.Path, "/v1/") {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	rc     *http.ResponseController
	body   io.ReadCloser
	start  time.Time
	grace  time.Duration
	rate   int64
	n      int64
	eof    bool
	failed bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.failed = true
	}
	if err == io.EOF && !b.eof {
		// The body is complete: what follows on this connection (the
		// server watching for a client close while the handler works, the
		// next request under its own timeouts) is not body reading.
		b.eof = true
		_ = b.rc.SetReadDeadline(time.Time{})
	} else if n > 0 && b.rate > 0 && !b.eof {
		_ = b.rc.SetReadDeadline(b.start.Add(b.grace + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second))))
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }

// ConnLimits bounds the connections of a listener.
type ConnLimits struct {
	// Total connections open at once (0: no cap).
	Total int
	// PerIP connections open at once from one address (IPv6: one /64);
	// 0: no cap.
	PerIP int
	// Exempt peers (trusted proxies) count only towards Total.
	Exempt []netip.Prefix
	// OnRefuse, if set, is called for each refused connection with the
	// reason ("total" or "per_ip").
	OnRefuse func(reason string)
}

// LimitListener wraps ln: a connection over a cap is accepted and closed
// at once (so it neither waits in the backlog nor costs a goroutine), and
// the caps keep the process below its file limit. Per-address caps keep
// one client from starving the others.
func LimitListener(ln net.Listener, l ConnLimits) net.Listener {
	return &limitListener{Listener: ln, lim: l, perIP: map[string]int{}}
}

type limitListener struct {
	net.Listener
	lim   ConnLimits
	mu    sync.Mutex
	total int
	perIP map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, exempt := "", false
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			a := ap.Addr().Unmap()
			key = limitKey(a.String())
			exempt = ipInPrefixes(a.String(), l.lim.Exempt)
		}
		l.mu.Lock()
		reason := ""
		switch {
		case l.lim.Total > 0 && l.total >= l.lim.Total:
			reason = "total"
		case !exempt && l.lim.PerIP > 0 && l.perIP[key] >= l.lim.PerIP:
			reason = "per_ip"
		default:
			l.total++
			l.perIP[key]++
		}
		l.mu.Unlock()
		if reason != "" {
			_ = c.Close()
			if l.lim.OnRefuse != nil {
				l.lim.OnRefuse(reason)
			}
			continue
		}
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *limitListener) release(key string) {
	l.mu.Lock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
	l.mu.Unlock()
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// forwardedIP returns the client address behind trusted proxies: the
// X-Forwarded-For chain is walked from the right (the hop the peer added)
// while hops are trusted proxies; the first untrusted hop is the client.
// Anything malformed falls back to the peer. X-Real-IP is used when there
// is no X-Forwarded-For.
func forwardedIP(peer string, h http.Header, trusted []netip.Prefix) string {
	if len(trusted) == 0 || !ipInPrefixes(peer, trusted) {
		return peer
	}
	var hops []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, p := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(p))
		}
	}
	if len(hops) == 0 {
		if v := strings.TrimSpace(h.Get("X-Real-IP")); v != "" {
			hops = []string{v}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return peer
		}
		client = a.Unmap().WithZone("").String()
		if !ipInPrefixes(client, trusted) {
			return client
		}
	}
	return client
}
