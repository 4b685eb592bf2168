package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// bareDecision is what the bare handler answers to GET /v1/decisions: one
// decision, about the size of a halapi hit.
const bareDecision = `[{"duration":"23h59m58s","id":1,"origin":"cscli-import","scenario":"import","scope":"Ip","type":"ban","value":"11.0.0.1"}]`

// bareServer is the ceiling: a plain net/http server in this process, on
// loopback, that does no work beyond answering.
type bareServer struct {
	url    string
	tls    *tls.Config // client side: trusts the self-signed certificate (nil: plain HTTP)
	srv    *http.Server
	stream atomic.Pointer[[]byte] // body served on /v1/decisions/stream
	ids    []byte                 // body answered to POST /v1/alerts
}

// startBare starts the bare handler, over HTTPS with a fresh self-signed
// P-256 certificate (what halapi's CA issues) when https is set.
func startBare(https bool) (*bareServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &bareServer{url: "http://" + ln.Addr().String()}
	if https {
		cert, pool, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		b.url = "https://" + ln.Addr().String()
		b.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ids := []byte{'['}
	for i := 1; i <= alertsPerBatch; i++ {
		if i > 1 {
			ids = append(ids, ',')
		}
		ids = append(ids, '"')
		ids = strconv.AppendInt(ids, int64(i), 10)
		ids = append(ids, '"')
	}
	b.ids = append(ids, ']')
	empty := []byte(`{"deleted":null,"new":null}`)
	b.stream.Store(&empty)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/decisions", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, bareDecision)
	})
	mux.HandleFunc("GET /v1/decisions/stream", func(w http.ResponseWriter, _ *http.Request) {
		body := *b.stream.Load()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	mux.HandleFunc("POST /v1/alerts", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(b.ids)
	})
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "halapi-bench bare handler"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

func (b *bareServer) setStream(body []byte) { b.stream.Store(&body) }

func (b *bareServer) close() { _ = b.srv.Close() }
