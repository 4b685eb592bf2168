package profiles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/beevik/etree"
	"github.com/corazawaf/libinjection-go"
)

// Helpers that the reference gives profiles beyond the stateless ones of
// helpers.go: XML, libinjection, JA4H, DNS, key=value and JSON parsing into a
// map. The ones that read outside data (CTI, GeoIP, data files, stash) live
// in their own files and are configured by HelperConfig.

// --- XML (github.com/beevik/etree, as the reference) ---

const maxXMLPaths = 1024

var xmlPaths = struct {
	sync.Mutex
	m map[string]etree.Path
}{m: map[string]etree.Path{}}

func xmlPath(path string) (etree.Path, error) {
	xmlPaths.Lock()
	defer xmlPaths.Unlock()
	if p, ok := xmlPaths.m[path]; ok {
		return p, nil
	}
	p, err := etree.CompilePath(path)
	if err != nil {
		return etree.Path{}, err
	}
	if len(xmlPaths.m) >= maxXMLPaths {
		clear(xmlPaths.m)
	}
	xmlPaths.m[path] = p
	return p, nil
}

// xmlFind returns the first element of doc matching path; nil when the path
// does not compile, the document does not parse or nothing matches.
func xmlFind(doc, path string) *etree.Element {
	p, err := xmlPath(path)
	if err != nil {
		state().logger.Warn("XML helper: invalid path", "path", path, "error", err)
		return nil
	}
	d := etree.NewDocument()
	if err := d.ReadFromString(doc); err != nil {
		return nil
	}
	return d.FindElementPath(p)
}

func xmlGetAttributeValue(doc, path, attr string) string {
	el := xmlFind(doc, path)
	if el == nil {
		return ""
	}
	if a := el.SelectAttr(attr); a != nil {
		return a.Value
	}
	return ""
}

func xmlGetNodeValue(doc, path string) string {
	if el := xmlFind(doc, path); el != nil {
		return el.Text()
	}
	return ""
}

// --- libinjection (github.com/corazawaf/libinjection-go, as the reference) ---

func isSQLI(s string) bool {
	r, _ := libinjection.IsSQLi(s)
	return r
}

func isXSS(s string) bool { return libinjection.IsXSS(s) }

// --- JA4H: the JA4+ HTTP client fingerprint of a request ---
//
// a: method (2 lower-case letters), version (major, minor digits), cookie
// flag c/n, referer flag r/n, header count (Cookie/Referer not counted, at
// most 99), first Accept-Language (no '-', 4 chars, 0-padded, "0000" when
// absent); b: truncated sha256 of the sorted header names (Cookie*, Referer
// excluded); c and d: truncated sha256 of the cookie names / name=value
// pairs sorted by name, "000000000000" without cookies. A profile has no
// request to give it, so in practice JA4H(nil), which is an error in both.

// JA4H is the JA4H fingerprint of req (the JA4H profile helper; exported for
// the differential test).
func JA4H(req *http.Request) (string, error) {
	if req == nil {
		return "", errors.New("JA4H: nil request")
	}
	trunc := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])[:12]
	}
	var a strings.Builder
	m := strings.ToLower(req.Method)
	a.WriteString(m[:min(len(m), 2)])
	a.WriteString(strconv.Itoa(req.ProtoMajor%10) + strconv.Itoa(req.ProtoMinor%10))
	cookies := req.Cookies()
	a.WriteString(map[bool]string{true: "c", false: "n"}[len(cookies) > 0])
	a.WriteString(map[bool]string{true: "r", false: "n"}[req.Referer() != ""])
	n := len(req.Header)
	if req.Header.Get("Cookie") != "" {
		n--
	}
	if req.Header.Get("Referer") != "" {
		n--
	}
	a.WriteString(strconv.Itoa(min(n, 99)/10) + strconv.Itoa(min(n, 99)%10))
	lang := strings.ToLower(req.Header.Get("Accept-Language"))
	if lang == "" {
		a.WriteString("0000")
	} else {
		lang = strings.ReplaceAll(lang, "-", "")
		first, _, _ := strings.Cut(strings.ReplaceAll(lang, ";", ","), ",")
		first = first[:min(len(first), 4)]
		a.WriteString(first + strings.Repeat("0", 4-len(first)))
	}
	names := make([]string, 0, len(req.Header))
	for k := range req.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "cookie") || lk == "referer" {
			continue
		}
		names = append(names, k)
	}
	slices.Sort(names)
	slices.SortFunc(cookies, func(x, y *http.Cookie) int { return strings.Compare(x.Name, y.Name) })
	c, d := "000000000000", "000000000000"
	if len(cookies) > 0 {
		cn, cv := make([]string, len(cookies)), make([]string, len(cookies))
		for i, ck := range cookies {
			cn[i], cv[i] = ck.Name, ck.Name+"="+ck.Value
		}
		c, d = trunc(strings.Join(cn, ",")), trunc(strings.Join(cv, ","))
	}
	return a.String() + "_" + trunc(strings.Join(names, ",")) + "_" + c + "_" + d, nil
}

// --- LookupHost, bounded by HelperConfig.LookupTimeout ---

func lookupHost(host string) []string {
	st := state()
	ctx, cancel := context.WithTimeout(context.Background(), st.cfg.LookupTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		st.logger.Warn("LookupHost failed", "host", host, "error", err)
		return []string{}
	}
	return addrs
}

// --- ParseKV, ParseKVLax, UnmarshalJSON: parse into target[prefix] ---

var errKVFormat = errors.New("invalid input format")

// kvPair is key=value, key="quoted \" value" (escapes kept) or key= (empty).
var kvPair = regexp.MustCompile(`([^=\s]+)=(?:"((?:[^"\\]|\\.)*)"|([^=\s]+)|\s*)`)

// kvLaxKey is the start of a pair in lax parsing: an identifier and '='.
var kvLaxKey = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_.-]*=`)

func kvTarget(target map[string]any, prefix string) (map[string]string, error) {
	cur, ok := target[prefix]
	if !ok {
		m := map[string]string{}
		target[prefix] = m
		return m, nil
	}
	m, ok := cur.(map[string]string)
	if !ok {
		return nil, errors.New("target is not a map[string]string")
	}
	return m, nil
}

func parseKV(blob string, target map[string]any, prefix string) error {
	pairs := kvPair.FindAllStringSubmatch(blob, -1)
	if pairs == nil {
		return errKVFormat
	}
	m, err := kvTarget(target, prefix)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		v := p[2]
		if v == "" {
			v = p[3]
		}
		m[p[1]] = v
	}
	return nil
}

func parseKVLax(blob string, target map[string]any, prefix string) error {
	m, err := kvTarget(target, prefix)
	if err != nil {
		return err
	}
	var starts [][]int
	for _, loc := range kvLaxKey.FindAllStringIndex(blob, -1) {
		if !quoteOpenBefore(blob, loc[0]) {
			starts = append(starts, loc)
		}
	}
	if len(starts) == 0 {
		return errKVFormat
	}
	for i, loc := range starts {
		end := len(blob)
		if i+1 < len(starts) {
			end = starts[i+1][0]
		}
		m[blob[loc[0]:loc[1]-1]] = laxValue(strings.TrimSpace(blob[loc[1]:end]))
	}
	return nil
}

// quoteOpenBefore tells whether an unescaped '"' opened before pos is still
// open at pos.
func quoteOpenBefore(s string, pos int) bool {
	open := false
	for i := 0; i < pos && i < len(s); i++ {
		if s[i] != '"' {
			continue
		}
		bs := 0
		for j := i - 1; j >= 0 && s[j] == '\\'; j-- {
			bs++
		}
		if bs%2 == 0 {
			open = !open
		}
	}
	return open
}

// laxValue strips the quotes of a quoted value (unescaping \\ then \"), or
// only the opening one when the closing one is missing.
func laxValue(s string) string {
	if !strings.HasPrefix(s, `"`) {
		return s
	}
	if len(s) >= 2 && strings.HasSuffix(s, `"`) {
		body := strings.ReplaceAll(s[1:len(s)-1], `\\`, `\`)
		return strings.ReplaceAll(body, `\"`, `"`)
	}
	return s[1:]
}

func unmarshalJSON(blob string, target map[string]any, key string) error {
	var v any
	if err := json.Unmarshal([]byte(blob), &v); err != nil {
		return err
	}
	target[key] = v
	return nil
}
