package fsm

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func u4(v uint32) U128 { return U128{Lo: uint64(v)} }

func TestParseRange(t *testing.T) {
	all := ^uint64(0)
	cases := []struct {
		in   string
		want IPRange
	}{
		{"1.2.3.4", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{" 1.2.3.4 ", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{"1.2.3.4/32", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{"1.2.3.0/24", IPRange{Fam: 4, Bits: 24, Start: u4(0x01020300), End: u4(0x010203ff)}},
		{"1.2.3.4/24", IPRange{Fam: 4, Bits: 24, Start: u4(0x01020300), End: u4(0x010203ff)}},
		{"1.2.3.4/31", IPRange{Fam: 4, Bits: 31, Start: u4(0x01020304), End: u4(0x01020305)}},
		{"10.255.255.255/8", IPRange{Fam: 4, Bits: 8, Start: u4(0x0a000000), End: u4(0x0affffff)}},
		{"128.0.0.1/1", IPRange{Fam: 4, Bits: 1, Start: u4(0x80000000), End: u4(0xffffffff)}},
		{"0.0.0.0/0", IPRange{Fam: 4, Bits: 0, Start: u4(0), End: u4(0xffffffff)}},
		{"255.255.255.255/0", IPRange{Fam: 4, Bits: 0, Start: u4(0), End: u4(0xffffffff)}},
		{"255.255.255.255", IPRange{Fam: 4, Bits: 32, Start: u4(0xffffffff), End: u4(0xffffffff)}},
		{"::ffff:1.2.3.4", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{"::ffff:102:304", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{"::ffff:1.2.3.4/120", IPRange{Fam: 4, Bits: 24, Start: u4(0x01020300), End: u4(0x010203ff)}},
		{"::ffff:1.2.3.4/128", IPRange{Fam: 4, Bits: 32, Start: u4(0x01020304), End: u4(0x01020304)}},
		{"::ffff:0.0.0.0/96", IPRange{Fam: 4, Bits: 0, Start: u4(0), End: u4(0xffffffff)}},
		{"::1", IPRange{Fam: 6, Bits: 128, Start: U128{0, 1}, End: U128{0, 1}}},
		{"::1/128", IPRange{Fam: 6, Bits: 128, Start: U128{0, 1}, End: U128{0, 1}}},
		{"::/0", IPRange{Fam: 6, Bits: 0, Start: U128{}, End: U128{all, all}}},
		{"ffff::1/0", IPRange{Fam: 6, Bits: 0, Start: U128{}, End: U128{all, all}}},
		{"2001:db8::8888/48", IPRange{Fam: 6, Bits: 48, Start: U128{0x20010db800000000, 0}, End: U128{0x20010db80000ffff, all}}},
		{"2001:db8::/48", IPRange{Fam: 6, Bits: 48, Start: U128{0x20010db800000000, 0}, End: U128{0x20010db80000ffff, all}}},
		{"2001:db8:1:2:3:4:5:6/64", IPRange{Fam: 6, Bits: 64, Start: U128{0x20010db800010002, 0}, End: U128{0x20010db800010002, all}}},
		{"2001:db8:1:2:3:4:5:6/63", IPRange{Fam: 6, Bits: 63, Start: U128{0x20010db800010002, 0}, End: U128{0x20010db800010003, all}}},
		{"2001:db8:1:2:3:4:5:6/65", IPRange{Fam: 6, Bits: 65, Start: U128{0x20010db800010002, 0}, End: U128{0x20010db800010002, all >> 1}}},
		{"2001:db8:1:2:3:4:5:6/127", IPRange{Fam: 6, Bits: 127, Start: U128{0x20010db800010002, 0x0003000400050006}, End: U128{0x20010db800010002, 0x0003000400050007}}},
		{"fe80::1%eth0", IPRange{Fam: 6, Bits: 128, Start: U128{0xfe80000000000000, 1}, End: U128{0xfe80000000000000, 1}}},
		{"::", IPRange{Fam: 6, Bits: 128}},
		{"0.0.0.0", IPRange{Fam: 4, Bits: 32}},
		// an IPv4-compatible (not mapped) address is IPv6
		{"::1.2.3.4", IPRange{Fam: 6, Bits: 128, Start: U128{0, 0x01020304}, End: U128{0, 0x01020304}}},
	}
	for _, c := range cases {
		got, err := ParseRange(c.in)
		if err != nil {
			t.Errorf("ParseRange(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseRange(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if !got.Valid() {
			t.Errorf("ParseRange(%q) not valid", c.in)
		}
	}
	for _, bad := range []string{"", " ", "abc", "1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.4/33", "1.2.3.4/-1", "1.2.3.4/",
		"/24", "1.2.3.4/24/8", "::/129", "2001:db8::g", "1.2.3.4 /24", "Ip", "10.0.0.1-10.0.0.5", "1.2.3.4/ab",
		"fe80::1%eth0/64"} {
		r, err := ParseRange(bad)
		if err == nil {
			t.Errorf("ParseRange(%q) = %+v, want an error", bad, r)
			continue
		}
		if want := fmt.Sprintf("invalid ip address '%s'", strings.TrimSpace(bad)); err.Error() != want {
			t.Errorf("ParseRange(%q) error %q, want %q", bad, err, want)
		}
	}
}

func TestIPRangeContains(t *testing.T) {
	r := func(s string) IPRange { return mustRange(t, s) }
	cases := []struct {
		a, b     string
		contains bool
	}{
		{"1.2.3.0/24", "1.2.3.4", true},
		{"1.2.3.0/24", "1.2.3.0/24", true},
		{"1.2.3.0/24", "1.2.3.128/25", true},
		{"1.2.3.0/24", "1.2.0.0/16", false},
		{"1.2.3.4", "1.2.3.0/24", false},
		{"1.2.3.4", "1.2.3.4", true},
		{"1.2.3.4", "1.2.3.5", false},
		{"0.0.0.0/0", "255.255.255.255", true},
		{"0.0.0.0/0", "::1", false},       // no cross-family match
		{"::/0", "1.2.3.4", false},        // no cross-family match
		{"::/0", "::ffff:1.2.3.4", false}, // mapped is IPv4
		{"::/0", "2001:db8::1", true},
		{"2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"2001:db8::/32", "2001:db9::", false},
		{"2001:db8::/64", "2001:db8::/63", false},
		{"2001:db8::/63", "2001:db8:0:1::/64", true},
		{"::/1", "8000::", false},
		{"::/1", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
	}
	for _, c := range cases {
		a, b := r(c.a), r(c.b)
		if got := a.Contains(b); got != c.contains {
			t.Errorf("%s contains %s = %v, want %v", c.a, c.b, got, c.contains)
		}
		if got := a.Related(b); got != (c.contains || b.Contains(a)) {
			t.Errorf("%s related %s = %v", c.a, c.b, got)
		}
		if !a.Related(a) {
			t.Errorf("%s not related to itself", c.a)
		}
	}
	var zero IPRange
	if zero.Valid() || zero.Contains(zero) || zero.Contains(r("1.2.3.4")) || r("0.0.0.0/0").Contains(zero) {
		t.Error("the zero range must match nothing")
	}
	if !(U128{1, 0}).Less(U128{1, 1}) || (U128{1, 0}).Less(U128{0, ^uint64(0)}) || (U128{2, 3}).Cmp(U128{2, 3}) != 0 ||
		(U128{2, 3}).Cmp(U128{2, 4}) != -1 || (U128{3, 0}).Cmp(U128{2, 9}) != 1 {
		t.Error("U128 ordering")
	}
}

// --- index against a naive scan ---------------------------------------

// oracle is an independent range computation with netip: family and
// 16-byte inclusive bounds (IPv4 in the last four bytes).
type oracle struct {
	fam    int
	lo, hi [16]byte
}

func oracleRange(t testing.TB, v string) (oracle, bool) {
	t.Helper()
	var p netip.Prefix
	if strings.Contains(v, "/") {
		pp, err := netip.ParsePrefix(v)
		if err != nil {
			return oracle{}, false
		}
		p = pp
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return oracle{}, false
		}
		a = a.Unmap().WithZone("")
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	var o oracle
	if p.Addr().Is4() {
		o.fam = 4
		b := p.Addr().As4()
		copy(o.lo[12:], b[:])
	} else {
		o.fam = 6
		o.lo = p.Addr().As16()
	}
	o.hi = o.lo
	width := 128
	if o.fam == 4 {
		width = 32
	}
	host := width - p.Bits() // low bits to set
	for i := 15; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		o.hi[i] |= byte(1<<n - 1)
		host -= n
	}
	return o, true
}

func (o oracle) u128() (U128, U128) {
	conv := func(b [16]byte) U128 {
		var u U128
		for i := 0; i < 8; i++ {
			u.Hi = u.Hi<<8 | uint64(b[i])
			u.Lo = u.Lo<<8 | uint64(b[8+i])
		}
		return u
	}
	return conv(o.lo), conv(o.hi)
}

type modelDec struct {
	id        int64
	lo, hi    [2]uint64 // oracle bounds as (hi, lo) words
	value     string
	scope     string
	until     int64
	createdAt int64
	simulated bool
	ipScoped  bool
	r         oracle
}

type ipWorld struct {
	t     testing.TB
	h     *harness
	rng   *rand.Rand
	model map[int64]*modelDec
	list  []*modelDec       // model in ID order
	alert map[int64][]int64 // alert -> decision IDs
}

func (w *ipWorld) refresh() {
	w.list = w.list[:0]
	for _, id := range w.ids() {
		w.list = append(w.list, w.model[id])
	}
}

func words(o oracle) (lo, hi [2]uint64) {
	l, h := o.u128()
	return [2]uint64{l.Hi, l.Lo}, [2]uint64{h.Hi, h.Lo}
}

func wordsLE(a, b [2]uint64) bool { return a[0] < b[0] || (a[0] == b[0] && a[1] <= b[1]) }

// covers reports whether m's range contains [lo, hi] of family fam.
func (m *modelDec) covers(fam int, lo, hi [2]uint64) bool {
	return m.r.fam == fam && wordsLE(m.lo, lo) && wordsLE(hi, m.hi)
}

// within reports whether m's range lies inside [lo, hi] of family fam.
func (m *modelDec) within(fam int, lo, hi [2]uint64) bool {
	return m.r.fam == fam && wordsLE(lo, m.lo) && wordsLE(m.hi, hi)
}

var (
	v4Base = netip.MustParseAddr("10.20.0.0")       // 4096 addresses: 10.20.0.0/20
	v6Base = netip.MustParseAddr("2001:db8::1:0")   // 4096 addresses in 2001:db8::1:0/116
	v4Far  = netip.MustParseAddr("192.168.0.0")     // a second, disjoint IPv4 area
	v6Far  = netip.MustParseAddr("2001:db8:ffff::") // a second, disjoint IPv6 area
)

func addOffset(a netip.Addr, off int) netip.Addr {
	b := a.As16()
	carry := off
	for i := 15; i >= 0 && carry > 0; i-- {
		s := int(b[i]) + carry&0xff
		b[i] = byte(s)
		carry = carry>>8 + s>>8
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}

// randomValue returns an IP or CIDR string, mostly in small spaces so that
// ranges overlap, with host bits often left set.
func (w *ipWorld) randomValue() string {
	r := w.rng
	var addr netip.Addr
	v6 := r.IntN(2) == 0
	switch {
	case !v6 && r.IntN(10) == 0:
		addr = addOffset(v4Far, r.IntN(256))
	case !v6:
		addr = addOffset(v4Base, r.IntN(4096))
	case r.IntN(10) == 0:
		addr = addOffset(v6Far, r.IntN(256))
	default:
		addr = addOffset(v6Base, r.IntN(4096))
	}
	width := addr.BitLen()
	var bits int
	switch k := r.IntN(20); {
	case k < 9:
		bits = width
	case k < 18:
		bits = width - 1 - r.IntN(16) // /16../31 or /112../127
	case k == 18:
		bits = r.IntN(width / 2) // wide, sometimes /0
	default:
		bits = width - 16 - r.IntN(6)
	}
	switch {
	case bits == width && r.IntN(4) == 0:
		return fmt.Sprintf("%s/%d", addr, bits)
	case bits == width && addr.Is4() && r.IntN(6) == 0:
		return "::ffff:" + addr.String() // IPv4-mapped
	case bits == width:
		return addr.String()
	case addr.Is4() && r.IntN(8) == 0:
		return fmt.Sprintf("::ffff:%s/%d", addr, bits+96)
	}
	return fmt.Sprintf("%s/%d", addr, bits)
}

var ipScopeVariants = []string{"Ip", "Range", "ip", "range", "RANGE"}

func (w *ipWorld) populate(n int, now int64) {
	r := w.rng
	for created := 0; created < n; {
		batch := 1 + r.IntN(60)
		simulated := r.IntN(5) == 0
		createdAt := now - int64(r.IntN(600))*mins
		var ds []Decision
		var mds []*modelDec
		for i := 0; i < batch; i++ {
			v := w.randomValue()
			scope := ipScopeVariants[r.IntN(len(ipScopeVariants))]
			if r.IntN(20) == 0 {
				scope = []string{"Country", "AS", "Username"}[r.IntN(3)] // IP-looking value, no range
			}
			var until int64
			switch k := r.IntN(20); {
			case k < 3:
				until = now - int64(1+r.IntN(300))*sec
			case k == 3:
				until = now // live queries treat until == now as active
			default:
				until = now + int64(1+r.IntN(600))*mins
			}
			typ := []string{"ban", "ban", "captcha"}[r.IntN(3)]
			d := Decision{Origin: "crowdsec", Type: typ, Scope: scope, Value: v, Scenario: "rand", Until: until}
			o, ok := oracleRange(w.t, v)
			if !ok {
				w.t.Fatalf("generated an unparsable value %q", v)
			}
			ds = append(ds, d)
			md := &modelDec{value: v, scope: scope, until: until, createdAt: createdAt, simulated: simulated,
				ipScoped: IsIPScope(scope), r: o}
			md.lo, md.hi = words(o)
			mds = append(mds, md)
		}
		aid, ids := w.h.alert(createdAt, "", Alert{Simulated: simulated}, ds...)
		if len(ids) != len(mds) {
			w.t.Fatalf("alert %d stored %d of %d decisions", aid, len(ids), len(mds))
		}
		for i, id := range ids {
			mds[i].id = id
			w.model[id] = mds[i]
		}
		w.alert[aid] = ids
		created += batch
	}
	w.refresh()
}

// mutate expires some decisions by hand and deletes some alerts.
func (w *ipWorld) mutate(now int64) {
	r := w.rng
	var expire []int64
	for _, id := range w.ids() {
		if r.IntN(15) == 0 {
			expire = append(expire, id)
		}
	}
	ts := now - sec
	w.h.expire(ts, expire...)
	for _, id := range expire {
		m := w.model[id]
		if m.until > ts {
			m.until = ts
		}
	}
	var del []int64
	aids := make([]int64, 0, len(w.alert))
	for aid := range w.alert {
		aids = append(aids, aid)
	}
	for _, aid := range sortedIDs(aids) {
		if r.IntN(12) == 0 {
			del = append(del, aid)
		}
	}
	w.h.deleteAlerts(now, del...)
	for _, aid := range del {
		for _, id := range w.alert[aid] {
			delete(w.model, id)
		}
		delete(w.alert, aid)
	}
	w.refresh()
}

// ids returns the model's decision IDs in order (deterministic runs).
func (w *ipWorld) ids() []int64 {
	ids := make([]int64, 0, len(w.model))
	for id := range w.model {
		ids = append(ids, id)
	}
	return sortedIDs(ids)
}

func (w *ipWorld) naive(q oracle, contains, includeSim bool, now int64) []int64 {
	out := []int64{}
	lo, hi := words(q)
	for _, m := range w.list {
		if !m.ipScoped || m.until < now || (m.simulated && !includeSim) {
			continue
		}
		if (contains && m.covers(q.fam, lo, hi)) || (!contains && m.within(q.fam, lo, hi)) {
			out = append(out, m.id)
		}
	}
	return out
}

func (w *ipWorld) randomQuery() string {
	r := w.rng
	switch r.IntN(12) {
	case 0:
		return []string{"0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32", "10.20.0.0/20", "2001:db8::1:0/116",
			"8.8.8.8", "2001:4860::8888", "::ffff:0.0.0.0/96", "10.20.0.0/21"}[r.IntN(10)]
	case 1:
		// exactly a stored value
		return w.list[r.IntN(len(w.list))].value
	}
	return w.randomValue()
}

func (w *ipWorld) check(f *FSM, label string, queries int, now int64) {
	t := w.t
	t.Helper()
	checkIndexInvariants(t, f)
	fails := 0
	hits := map[bool]int{} // queries with a non-empty answer, by contains
	for i := 0; i < queries && fails < 10; i++ {
		qs := w.randomQuery()
		q, err := ParseRange(qs)
		if err != nil {
			t.Fatalf("query %q: %v", qs, err)
		}
		o, _ := oracleRange(t, qs)
		if lo, hi := o.u128(); q.Start != lo || q.End != hi || int(q.Fam) != o.fam {
			t.Fatalf("ParseRange(%q) = %+v, oracle %+v", qs, q, o)
		}
		for _, contains := range []bool{true, false} {
			for _, sim := range []bool{true, false} {
				got := idsOf(f.Decisions(&DecisionFilter{IP: &q, Contains: contains, IncludeSimulated: sim}, at(now)))
				want := w.naive(o, contains, sim, now)
				if sim && len(want) > 0 {
					hits[contains]++
				}
				if !equalIDs(got, want) {
					fails++
					t.Errorf("%s: q=%s contains=%v simulated=%v: index gave %d decisions, naive %d\n got %v\nwant %v",
						label, qs, contains, sim, len(got), len(want), got, want)
				}
			}
		}
		// profiles helpers use the covering lookup too
		since := now - int64(w.rng.IntN(600))*mins
		qlo, qhi := words(o)
		for _, activeOnly := range []bool{false, true} {
			wantN := 0
			for _, m := range w.list {
				if m.ipScoped && m.covers(o.fam, qlo, qhi) && m.createdAt > since && (!activeOnly || m.until > now) {
					wantN++
				}
			}
			if got := f.CountDecisions(qs, at(since), activeOnly, at(now)); got != wantN {
				fails++
				t.Errorf("%s: CountDecisions(%s, since, active=%v) = %d, want %d", label, qs, activeOnly, got, wantN)
			}
		}
		allN := 0
		var best int64
		for _, m := range w.list {
			if m.ipScoped && m.covers(o.fam, qlo, qhi) {
				allN++
				if m.until > now && m.until > best {
					best = m.until
				}
			}
		}
		if got := f.CountDecisions(qs, time.Time{}, false, at(now)); got != allN {
			fails++
			t.Errorf("%s: CountDecisions(%s) = %d, want %d", label, qs, got, allN)
		}
		wantLeft := time.Duration(0)
		if best > 0 {
			wantLeft = time.Duration(best - now)
		}
		if got := f.ActiveTimeLeft(qs, at(now)); got != wantLeft {
			fails++
			t.Errorf("%s: ActiveTimeLeft(%s) = %v, want %v", label, qs, got, wantLeft)
		}
	}
	// the data must make both lookups non-trivial
	if hits[true] < queries/5 || hits[false] < queries/5 {
		t.Errorf("%s: too few non-empty answers (contains: %d, inside: %d of %d queries)", label, hits[true], hits[false], queries)
	}
	// every stored range matches the oracle
	for id, m := range w.model {
		d := f.Decision(id)
		if d == nil {
			t.Fatalf("%s: decision %d missing", label, id)
		}
		if !m.ipScoped {
			if d.Range.Valid() {
				t.Errorf("%s: non-IP decision %d (%s %s) has a range", label, id, m.scope, m.value)
			}
			continue
		}
		lo, hi := m.r.u128()
		if int(d.Range.Fam) != m.r.fam || d.Range.Start != lo || d.Range.End() != hi {
			t.Errorf("%s: decision %d %q range %+v, oracle %+v", label, id, m.value, d.Range, m.r)
		}
	}
	// counts
	active := 0
	for _, m := range w.model {
		if m.until > now {
			active++
		}
	}
	if _, act, tot := f.Counts(at(now)); act != active || tot != len(w.model) {
		t.Errorf("%s: Counts active/total = %d/%d, want %d/%d", label, act, tot, active, len(w.model))
	}
}

func TestIPIndexMatchesNaiveScan(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	n, queries := 3000, 400
	if testing.Short() || raceEnabled {
		seeds, queries = seeds[:1], 100
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			now := T0 + 24*hour
			w := &ipWorld{t: t, h: newHarness(t), rng: rand.New(rand.NewPCG(seed, 42)), model: map[int64]*modelDec{}, alert: map[int64][]int64{}}
			w.populate(n, now)
			w.check(w.h.f, "fresh", queries, now)
			w.mutate(now)
			w.populate(n/3, now)
			w.check(w.h.f, "after expire/delete", queries, now)
			// the index is rebuilt from a snapshot
			w.check(roundTrip(t, w.h.f), "restored", queries/2, now)
			// time moves on: more of the decisions are expired
			later := now + 3*hour
			w.check(w.h.f, "later", queries/2, later)
		})
	}
}

func TestDecisionsQueryFilters(t *testing.T) {
	h := newHarness(t)
	a := h.dec(T0, withUUID(ban("1.1.1.1", T0+hour), "00000000-0000-4000-8000-00000000000a"))
	b := h.dec(T0, withUUID(withType(ban("1.1.1.1", T0+hour), "captcha"), "00000000-0000-4000-8000-00000000000b"))
	c := h.dec(T0, withUUID(withScenario(withOrigin(ban("2.2.2.2", T0+hour), "CAPI"), "crowdsecurity/http-bf"), "00000000-0000-4000-8000-00000000000c"))
	sim := h.simDec(T0, ban("3.3.3.3", T0+hour))
	h.dec(T0, ban("4.4.4.4", T0-hour)) // expired
	now := at(T0)
	cases := []struct {
		name string
		flt  DecisionFilter
		want []int64
	}{
		{"all", DecisionFilter{}, []int64{a, b, c}},
		{"simulated", DecisionFilter{IncludeSimulated: true}, []int64{a, b, c, sim}},
		{"value", DecisionFilter{Value: "1.1.1.1"}, []int64{a, b}},
		{"value+type", DecisionFilter{Value: "1.1.1.1", Type: "captcha"}, []int64{b}},
		{"type", DecisionFilter{Type: "ban"}, []int64{a, c}},
		{"origins", DecisionFilter{Origins: []string{"CAPI"}}, []int64{c}},
		{"scenario exact", DecisionFilter{Scenario: "crowdsecurity/http-bf"}, []int64{c}},
		{"scenario exact only", DecisionFilter{Scenario: "crowdsecurity/http"}, nil},
		{"uuids", DecisionFilter{UUIDs: []string{"00000000-0000-4000-8000-00000000000c", "00000000-0000-4000-8000-00000000000a"}}, []int64{a, c}},
		{"id_gt", DecisionFilter{IDGt: a}, []int64{b, c}},
		{"id_gt+value", DecisionFilter{IDGt: a, Value: "1.1.1.1"}, []int64{b}},
		{"limit", DecisionFilter{Limit: 2}, []int64{a, b}},
		{"offset", DecisionFilter{Offset: 1}, []int64{b, c}},
		{"limit+offset", DecisionFilter{Limit: 1, Offset: 1}, []int64{b}},
		{"offset past end", DecisionFilter{Offset: 5}, nil},
		{"ip+limit", DecisionFilter{IP: rangeOf(t, "0.0.0.0/0"), Contains: false, Limit: 2, IncludeSimulated: true}, []int64{a, b}},
		{"scopes", DecisionFilter{Scopes: []string{"Range"}}, nil},
	}
	for _, tc := range cases {
		flt := tc.flt
		checkIDs(t, tc.name, h.f.Decisions(&flt, now), tc.want...)
	}
	// DELETE /v1/decisions passes IncludeSimulated (lapi.md §4.10)
	if got := h.f.MatchActive(&DecisionFilter{IncludeSimulated: true}, now); !equalIDs(got, []int64{a, b, c, sim}) {
		t.Errorf("MatchActive with simulated: got %v", got)
	}
	if got := h.f.MatchActive(&DecisionFilter{}, now); !equalIDs(got, []int64{a, b, c}) {
		t.Errorf("MatchActive without simulated: got %v", got)
	}
	if got := h.f.MatchActive(&DecisionFilter{IP: rangeOf(t, "1.1.1.1"), Contains: true, Type: "ban"}, now); !equalIDs(got, []int64{a}) {
		t.Errorf("MatchActive ip+type = %v", got)
	}
}

func TestCountDecisionsAndTimeLeft(t *testing.T) {
	h := newHarness(t)
	h.dec(T0, ban("1.2.3.4", T0+hour))
	h.dec(T0+mins, withScope(ban("1.2.3.0/24", T0+3*hour), "Range"))
	h.simDec(T0+2*mins, withType(ban("1.2.0.0/16", T0+2*hour), "captcha"))
	h.dec(T0, ban("1.2.3.4", T0-hour))                              // expired
	h.dec(T0, withScope(ban("1.2.3.4", T0+5*hour), "Country"))      // not an IP scope
	h.dec(T0, ban("1.2.3.5", T0+9*hour))                            // other address
	h.dec(T0, ban("::ffff:1.2.3.4", T0+30*mins))                    // same address, mapped
	h.dec(T0, withScope(ban("1.2.3.4/30", T0+4*hour+sec), "Range")) // inside the /24, covers the IP
	now := T0 + 10*mins

	cases := []struct {
		value       string
		since       time.Time
		all, active int
		left        time.Duration
	}{
		{"1.2.3.4", time.Time{}, 6, 5, time.Duration(4*hour + sec - 10*mins)},
		{"1.2.3.4", at(T0), 2, 2, time.Duration(4*hour + sec - 10*mins)}, // created strictly after
		{"1.2.3.4", at(T0 + mins), 1, 1, time.Duration(4*hour + sec - 10*mins)},
		{"1.2.3.0/24", time.Time{}, 2, 2, time.Duration(3*hour - 10*mins)},
		{"1.2.0.0/16", time.Time{}, 1, 1, time.Duration(2*hour - 10*mins)},
		{"1.2.3.5", time.Time{}, 4, 4, time.Duration(9*hour - 10*mins)}, // /24, /16, /30 and itself
		{"1.2.3.9", time.Time{}, 2, 2, time.Duration(3*hour - 10*mins)},
		{"9.9.9.9", time.Time{}, 0, 0, 0},
		{"::1", time.Time{}, 0, 0, 0},
		{"not-an-ip", time.Time{}, 0, 0, 0},
	}
	for _, c := range cases {
		if got := h.f.CountDecisions(c.value, c.since, false, at(now)); got != c.all {
			t.Errorf("CountDecisions(%s, %v, all) = %d, want %d", c.value, c.since, got, c.all)
		}
		if got := h.f.CountDecisions(c.value, c.since, true, at(now)); got != c.active {
			t.Errorf("CountDecisions(%s, %v, active) = %d, want %d", c.value, c.since, got, c.active)
		}
		if c.since.IsZero() {
			if got := h.f.ActiveTimeLeft(c.value, at(now)); got != c.left {
				t.Errorf("ActiveTimeLeft(%s) = %v, want %v", c.value, got, c.left)
			}
		}
	}
}
