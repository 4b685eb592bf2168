package profiles

import "testing"

func TestGeoIPCountry(t *testing.T) {
	configure(t, HelperConfig{})
	if GeoIPLoaded() || GeoIPCountry("1.2.3.4") != "" {
		t.Fatal("a country without a database")
	}
	dir := t.TempDir()
	writeGeoIPDBs(t, dir)
	configure(t, HelperConfig{GeoIPDir: dir})
	if !GeoIPLoaded() {
		t.Fatal("database not loaded")
	}
	for ip, want := range map[string]string{"1.2.3.4": "FR", "2a01:4f8::1": "DE", "9.9.9.9": "", "not-an-ip": ""} {
		if got := GeoIPCountry(ip); got != want {
			t.Errorf("%s: %q, want %q", ip, got, want)
		}
	}
}
