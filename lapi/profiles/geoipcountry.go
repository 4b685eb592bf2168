package profiles

// GeoIPCountry is the ISO code of ip's country in the GeoIP City
// database the helpers are configured with (HelperConfig.GeoIPDir), ""
// when none is loaded or it does not know ip. The web console's
// decisions page shows it (package ui).
func GeoIPCountry(ip string) string {
	v, err := geoIPEnrich(ip)
	c, _ := v.(*GeoIPCity)
	if err != nil || c == nil {
		return ""
	}
	return c.Country.IsoCode
}

// GeoIPLoaded reports whether a GeoIP City database is loaded.
func GeoIPLoaded() bool {
	g := state().geo
	return g != nil && g.city != nil && g.cityOK
}
