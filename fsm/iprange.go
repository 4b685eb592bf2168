package fsm

import (
	"fmt"
	"net/netip"
	"strings"
)

// U128 is an unsigned 128-bit integer, big-endian halves.
type U128 struct{ Hi, Lo uint64 }

// Less reports a < b.
func (a U128) Less(b U128) bool { return a.Hi < b.Hi || (a.Hi == b.Hi && a.Lo < b.Lo) }

// Cmp returns -1, 0 or 1.
func (a U128) Cmp(b U128) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// mask keeps the first bits bits of a (0..128).
func (a U128) mask(bits int) U128 {
	switch {
	case bits <= 0:
		return U128{}
	case bits < 64:
		return U128{Hi: a.Hi &^ (^uint64(0) >> bits)}
	case bits == 64:
		return U128{Hi: a.Hi}
	case bits < 128:
		return U128{Hi: a.Hi, Lo: a.Lo &^ (^uint64(0) >> (bits - 64))}
	}
	return a
}

// fill sets every bit after the first bits bits of a.
func (a U128) fill(bits int) U128 {
	switch {
	case bits <= 0:
		return U128{^uint64(0), ^uint64(0)}
	case bits < 64:
		return U128{Hi: a.Hi | (^uint64(0) >> bits), Lo: ^uint64(0)}
	case bits == 64:
		return U128{Hi: a.Hi, Lo: ^uint64(0)}
	case bits < 128:
		return U128{Hi: a.Hi, Lo: a.Lo | (^uint64(0) >> (bits - 64))}
	}
	return a
}

// IPRange is the closed interval an IP or CIDR covers. Fam is 0 (not an
// address), 4 or 6. IPv4 addresses live in the low 32 bits. Because every
// value is an address or a CIDR, every range is prefix-aligned: Bits is the
// prefix length within the family (32/128 for a single address).
type IPRange struct {
	Fam        uint8
	Bits       uint8
	Start, End U128
}

// Prefix is an IPRange without its End (derived from Start and Bits):
// the 24-byte form each stored decision holds (an IPRange is 40).
type Prefix struct {
	Fam   uint8
	Bits  uint8
	Start U128
}

// Prefix returns r without its End.
func (r IPRange) Prefix() Prefix { return Prefix{Fam: r.Fam, Bits: r.Bits, Start: r.Start} }

// Valid reports whether p is an address range.
func (p Prefix) Valid() bool { return p.Fam != 0 }

// End is the last address of p.
func (p Prefix) End() U128 {
	switch p.Fam {
	case 4:
		return p.Start.fill(96 + int(p.Bits)).andLow32()
	case 6:
		return p.Start.fill(int(p.Bits))
	}
	return U128{}
}

// Range returns p as an IPRange.
func (p Prefix) Range() IPRange {
	if p.Fam == 0 {
		return IPRange{}
	}
	return IPRange{Fam: p.Fam, Bits: p.Bits, Start: p.Start, End: p.End()}
}

// Contains reports whether p covers o entirely (same family).
func (p Prefix) Contains(o IPRange) bool { return p.Range().Contains(o) }

// parsePrefix is ParseRange's Prefix, zero when v does not parse.
func parsePrefix(v string) Prefix {
	r, err := ParseRange(v)
	if err != nil {
		return Prefix{}
	}
	return r.Prefix()
}

// Valid reports whether r is an address range.
func (r IPRange) Valid() bool { return r.Fam != 0 }

// Contains reports whether r covers o entirely (same family).
func (r IPRange) Contains(o IPRange) bool {
	return r.Fam != 0 && r.Fam == o.Fam && !o.Start.Less(r.Start) && !r.End.Less(o.End)
}

// Overlaps-in-either-direction test used by allowlists: r contains o or o contains r.
func (r IPRange) Related(o IPRange) bool { return r.Contains(o) || o.Contains(r) }

func addrToU128(a netip.Addr) U128 {
	b := a.As16()
	var u U128
	for i := 0; i < 8; i++ {
		u.Hi = u.Hi<<8 | uint64(b[i])
		u.Lo = u.Lo<<8 | uint64(b[8+i])
	}
	return u
}

// ParseRange parses an IP address or CIDR (host bits ignored). IPv4-mapped
// IPv6 literals count as IPv4.
func ParseRange(s string) (IPRange, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return IPRange{}, fmt.Errorf("invalid ip address '%s'", s)
		}
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return IPRange{}, fmt.Errorf("invalid ip address '%s'", s)
			}
			a, bits = a.Unmap(), bits-96
		}
		return makeRange(a.WithZone(""), bits), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return IPRange{}, fmt.Errorf("invalid ip address '%s'", s)
	}
	a = a.Unmap().WithZone("")
	return makeRange(a, a.BitLen()), nil
}

func makeRange(a netip.Addr, bits int) IPRange {
	u := addrToU128(a)
	if a.Is4() {
		u = U128{Lo: u.Lo & 0xffffffff}
		abs := 96 + bits
		return IPRange{Fam: 4, Bits: uint8(bits), Start: u.mask(abs), End: u.mask(abs).fill(abs).andLow32()}
	}
	return IPRange{Fam: 6, Bits: uint8(bits), Start: u.mask(bits), End: u.mask(bits).fill(bits)}
}

func (a U128) andLow32() U128 { return U128{Lo: a.Lo & 0xffffffff} }

// maskTo returns the start of the prefix of length bits (family-relative)
// containing address a of family fam.
func maskTo(fam uint8, a U128, bits int) U128 {
	if fam == 4 {
		return a.mask(96 + bits).andLow32()
	}
	return a.mask(bits)
}

// IsIPScope reports whether a decision scope stores an IP interval
// (case-insensitive "ip" or "range").
func IsIPScope(scope string) bool {
	return strings.EqualFold(scope, "ip") || strings.EqualFold(scope, "range")
}
