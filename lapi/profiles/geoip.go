package profiles

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/oschwald/maxminddb-golang/v2"
)

// The GeoIP helpers read MaxMind databases with the names and in the
// directory the reference uses (its hub data dir). The result types mirror
// the field names of the reference's geoip2 City and ASN records, so an
// expression such as GeoIPEnrich(ip).Country.IsoCode type-checks and
// evaluates the same.

// Database file names, as in the reference.
const (
	GeoIPCityFile = "GeoLite2-City.mmdb"
	GeoIPASNFile  = "GeoLite2-ASN.mmdb"
)

// maxGeoIPFileBytes bounds a database read into memory.
const maxGeoIPFileBytes = 1 << 30

// GeoIPNames is a localized name map (language code -> name).
type GeoIPNames = map[string]string

// GeoIPCity is what GeoIPEnrich returns: a City (or Country) record.
type GeoIPCity struct {
	City struct {
		Names     GeoIPNames `maxminddb:"names"`
		GeoNameID uint       `maxminddb:"geoname_id"`
	} `maxminddb:"city"`
	Postal struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"postal"`
	Continent struct {
		Names     GeoIPNames `maxminddb:"names"`
		Code      string     `maxminddb:"code"`
		GeoNameID uint       `maxminddb:"geoname_id"`
	} `maxminddb:"continent"`
	Subdivisions []struct {
		Names     GeoIPNames `maxminddb:"names"`
		IsoCode   string     `maxminddb:"iso_code"`
		GeoNameID uint       `maxminddb:"geoname_id"`
	} `maxminddb:"subdivisions"`
	RepresentedCountry struct {
		Names             GeoIPNames `maxminddb:"names"`
		IsoCode           string     `maxminddb:"iso_code"`
		Type              string     `maxminddb:"type"`
		GeoNameID         uint       `maxminddb:"geoname_id"`
		IsInEuropeanUnion bool       `maxminddb:"is_in_european_union"`
	} `maxminddb:"represented_country"`
	Country           geoIPCountry `maxminddb:"country"`
	RegisteredCountry geoIPCountry `maxminddb:"registered_country"`
	Location          struct {
		TimeZone       string  `maxminddb:"time_zone"`
		Latitude       float64 `maxminddb:"latitude"`
		Longitude      float64 `maxminddb:"longitude"`
		MetroCode      uint    `maxminddb:"metro_code"`
		AccuracyRadius uint16  `maxminddb:"accuracy_radius"`
	} `maxminddb:"location"`
	Traits struct {
		IsAnonymousProxy    bool `maxminddb:"is_anonymous_proxy"`
		IsSatelliteProvider bool `maxminddb:"is_satellite_provider"`
	} `maxminddb:"traits"`
}

type geoIPCountry struct {
	Names             GeoIPNames `maxminddb:"names"`
	IsoCode           string     `maxminddb:"iso_code"`
	GeoNameID         uint       `maxminddb:"geoname_id"`
	IsInEuropeanUnion bool       `maxminddb:"is_in_european_union"`
}

// GeoIPASN is what GeoIPASNEnrich returns.
type GeoIPASN struct {
	AutonomousSystemOrganization string `maxminddb:"autonomous_system_organization"`
	AutonomousSystemNumber       uint   `maxminddb:"autonomous_system_number"`
}

type geoDBs struct {
	city, asn *maxminddb.Reader
	cityOK    bool // the city database's type answers City lookups
	asnOK     bool
}

// cityTypes are the database types the reference's geoip2 reader accepts for
// City lookups; asnTypes for ASN lookups.
var (
	cityTypes = map[string]bool{
		"DBIP-City-Lite": true, "DBIP-Country-Lite": true, "DBIP-Country": true,
		"DBIP-Location (compat=City)": true, "GeoLite2-City": true, "GeoIP2-City": true,
		"GeoIP2-City-Africa": true, "GeoIP2-City-Asia-Pacific": true, "GeoIP2-City-Europe": true,
		"GeoIP2-City-North-America": true, "GeoIP2-City-South-America": true,
		"GeoIP2-Precision-City": true, "GeoLite2-Country": true, "GeoIP2-Country": true,
		"DBIP-ISP (compat=Enterprise)": true, "DBIP-Location-ISP (compat=Enterprise)": true,
		"GeoIP2-Enterprise": true,
	}
	asnTypes = map[string]bool{
		"DBIP-ASN-Lite (compat=GeoLite2-ASN)": true, "GeoLite2-ASN": true,
		"GeoIP2-ISP": true, "GeoIP2-Precision-ISP": true,
	}
	otherTypes = map[string]bool{"GeoIP2-Anonymous-IP": true, "GeoIP2-Connection-Type": true, "GeoIP2-Domain": true}
)

// openGeoDBs opens the databases found in dir. The databases are read into
// memory (not mapped), so a later Configure can drop them while an
// evaluation still holds a reader.
func openGeoDBs(dir string, logger *slog.Logger) *geoDBs {
	g := &geoDBs{}
	if dir == "" {
		return g
	}
	open := func(name string) *maxminddb.Reader {
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			logger.Warn("GeoIP database not available, the GeoIP helpers that use it return nil", "path", path, "error", err)
			return nil
		}
		if fi.Size() > maxGeoIPFileBytes {
			logger.Warn("GeoIP database too large, ignored", "path", path, "bytes", fi.Size())
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			logger.Warn("GeoIP database not readable", "path", path, "error", err)
			return nil
		}
		r, err := maxminddb.OpenBytes(b)
		if err != nil {
			logger.Warn("GeoIP database not valid", "path", path, "error", err)
			return nil
		}
		return r
	}
	// Like the reference: a database of a type its reader does not know
	// does not open, and the ASN database is only used when the City one
	// opened.
	known := func(r *maxminddb.Reader, path string) bool {
		t := r.Metadata.DatabaseType
		if cityTypes[t] || asnTypes[t] || otherTypes[t] {
			return true
		}
		logger.Warn("GeoIP database of unknown type, ignored", "path", path, "type", t)
		return false
	}
	if g.city = open(GeoIPCityFile); g.city == nil || !known(g.city, GeoIPCityFile) {
		g.city = nil
		return g
	}
	g.cityOK = cityTypes[g.city.Metadata.DatabaseType]
	if g.asn = open(GeoIPASNFile); g.asn == nil || !known(g.asn, GeoIPASNFile) {
		g.asn = nil
		return g
	}
	g.asnOK = asnTypes[g.asn.Metadata.DatabaseType]
	return g
}

func (g *geoDBs) close() {}

// lookupAddr parses ip like the reference (net.ParseIP: no zones; an
// IPv4-mapped IPv6 address is looked up as IPv4).
func lookupAddr(ip string) (netip.Addr, error) {
	p := net.ParseIP(ip)
	if p == nil {
		return netip.Addr{}, errors.New("IP passed to Lookup cannot be nil")
	}
	a, _ := netip.AddrFromSlice(p)
	return a.Unmap(), nil
}

func geoIPEnrich(ip string) (any, error) {
	g := state().geo
	if g.city == nil {
		return (*GeoIPCity)(nil), nil
	}
	if !g.cityOK {
		return (*GeoIPCity)(nil), fmt.Errorf("geoip2: City method not supported for database type %s", g.city.Metadata.DatabaseType)
	}
	a, err := lookupAddr(ip)
	if err != nil {
		return (*GeoIPCity)(nil), err
	}
	var c GeoIPCity
	if err := g.city.Lookup(a).Decode(&c); err != nil {
		return (*GeoIPCity)(nil), err
	}
	return &c, nil
}

func geoIPASNEnrich(ip string) (any, error) {
	g := state().geo
	if g.asn == nil {
		return (*GeoIPASN)(nil), nil
	}
	if !g.asnOK {
		return (*GeoIPASN)(nil), fmt.Errorf("geoip2: ASN method not supported for database type %s", g.asn.Metadata.DatabaseType)
	}
	a, err := lookupAddr(ip)
	if err != nil {
		return (*GeoIPASN)(nil), err
	}
	var r GeoIPASN
	if err := g.asn.Lookup(a).Decode(&r); err != nil {
		return (*GeoIPASN)(nil), err
	}
	return &r, nil
}

// geoIPRangeEnrich returns the network of the ASN database entry holding ip,
// nil when there is none.
func geoIPRangeEnrich(ip string) (any, error) {
	g := state().geo
	if g.asn == nil {
		return (*net.IPNet)(nil), nil
	}
	a, err := lookupAddr(ip)
	if err != nil {
		return (*net.IPNet)(nil), err
	}
	res := g.asn.Lookup(a)
	if err := res.Err(); err != nil {
		return (*net.IPNet)(nil), err
	}
	if !res.Found() {
		return (*net.IPNet)(nil), nil
	}
	pfx := res.Prefix()
	return &net.IPNet{IP: net.IP(pfx.Addr().AsSlice()), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())}, nil
}
