package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// --------------------------------------------------------------------------
// Phase: the built-in PKI's HTTPS against plain HTTP, and the cost of a
// full TLS handshake per request.

func (b *bench) phaseTLS(ctx context.Context) error {
	if !b.kind.plainFlag {
		return errors.New("this halapi binary has no --plain-http: HTTPS is not its default")
	}
	n := b.cfg.Decisions
	b.progress("tls: starting a node with its default HTTPS and one with --plain-http, %s decisions each", thousands(float64(n)))
	hs, err := b.loadedKind(ctx, serverKind{bin: b.kind.bin, https: true, plainFlag: true}, "tls-https", n)
	if err != nil {
		return err
	}
	ps, err := b.loadedKind(ctx, serverKind{bin: b.kind.bin, plainFlag: true}, "tls-plain", n)
	if err != nil {
		return err
	}
	conn, err := describeTLS(ctx, hs.s, hs.key)
	if err != nil {
		return err
	}
	b.progress("tls: %s", conn)
	pr, kr, nr, err := b.tlsRounds(ctx, hs, ps, n)
	if err != nil {
		return err
	}
	b.reportTLS(n, conn, pr, kr, nr)
	return nil
}

// loadedKind is loadedServer for a given kind of server.
func (b *bench) loadedKind(ctx context.Context, kind serverKind, name string, n int) (loaded, error) {
	s, err := b.startKind(ctx, kind, name)
	if err != nil {
		return loaded{}, err
	}
	return loadServer(ctx, s, n)
}

// tlsRounds runs the point-query load on plain HTTP, on HTTPS with
// keep-alive and on HTTPS with a handshake per request, in rounds.
func (b *bench) tlsRounds(ctx context.Context, hs, ps loaded, n int) (plain, keepAlive, handshake []loadResult, err error) {
	paths := queryPathList(importNet, n)
	run := func(d loaded, noKeepAlive bool) func(context.Context) (loadResult, error) {
		return func(ctx context.Context) (loadResult, error) {
			spec := b.querySpec(d.s.url, d.s.tls, d.key, paths)
			spec.noKeepAlive = noKeepAlive
			return runLoad(ctx, spec, d.s.pid())
		}
	}
	res, err := b.rounds(ctx, "tls query", false, []contender{
		{"plain HTTP", run(ps, false)},
		{"HTTPS", run(hs, false)},
		{"HTTPS, handshake per request", run(hs, true)},
	}, showQuery)
	if err != nil {
		return nil, nil, nil, err
	}
	plain, keepAlive, handshake = res[0], res[1], res[2]
	b.rep.Runs["tls_query_plain"], b.rep.Runs["tls_query_https"], b.rep.Runs["tls_query_https_no_keepalive"] = plain, keepAlive, handshake
	return plain, keepAlive, handshake, nil
}

// reportTLS adds the figures of plain HTTP (pr), HTTPS with keep-alive (kr)
// and with a handshake per request (nr).
func (b *bench) reportTLS(n int, conn string, pr, kr, nr []loadResult) {
	rps := func(r loadResult) float64 { return r.RPS }
	p50 := func(r loadResult) float64 { return ms(r.P50) }
	nd := thousands(float64(n))
	ratio := pairedRatio(kr, pr, rps)
	pRPS := medianOf(pr, rps)
	m := b.rep.add(&metric{Key: "tls_query_rps", Name: fmt.Sprintf("GET /v1/decisions?ip= over HTTPS (%s decisions, %d conns)", nd, b.cfg.Conns),
		Unit: unitRPS, Value: medianOf(kr, rps), Ref: pRPS, RefName: "plain HTTP", Ratio: ratio,
		Target: fmt.Sprintf(">= 0.7x plain HTTP (~%s req/s)", thousands(0.7*pRPS))})
	m.judge(ratio >= 0.7)
	m.Errors = sumErrors(kr) + sumErrors(pr)
	b.rep.add(&metric{Key: "tls_query_p50_ms", Name: "  latency p50 over HTTPS", Unit: unitMS, Value: medianOf(kr, p50),
		Ref: medianOf(pr, p50), RefName: "plain HTTP", Ratio: pairedRatio(kr, pr, p50), Target: "-"})
	hm := b.rep.add(&metric{Key: "tls_handshake_rps", Name: "  HTTPS, full TLS handshake per request (no keep-alive)", Unit: unitRPS,
		Value: medianOf(nr, rps), Ref: medianOf(kr, rps), RefName: "keep-alive", Ratio: pairedRatio(nr, kr, rps), Target: "-"})
	hm.Errors = sumErrors(nr)
	b.rep.add(&metric{Key: "tls_handshake_p50_ms", Name: "  latency p50, handshake per request", Unit: unitMS, Value: medianOf(nr, p50),
		Ref: medianOf(kr, p50), RefName: "keep-alive", Ratio: pairedRatio(nr, kr, p50), Target: "-"})

	perReq := func(rs []loadResult) float64 {
		return medianOf(rs, func(r loadResult) float64 {
			if r.Requests == 0 {
				return 0
			}
			return r.ServerCPU.Seconds() / float64(r.Requests) * 1e6
		})
	}
	cp, ck, cn := perReq(pr), perReq(kr), perReq(nr)
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("tls: %s; halapi CPU per request: plain HTTP %.1f µs, HTTPS keep-alive %.1f µs, "+
		"HTTPS with a handshake per request %.1f µs (so ~%.0f µs of server CPU per full handshake; the client's side of the handshake "+
		"runs on the same 2 cores)", conn, cp, ck, cn, cn-ck))
}

// describeTLS makes one request to an HTTPS server and describes the
// connection it got (version, cipher suite, key exchange, certificate).
func describeTLS(ctx context.Context, s *server, key string) (string, error) {
	client := s.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/decisions?ip=127.0.0.1", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("User-Agent", bouncerUA)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.TLS == nil {
		return "", fmt.Errorf("%s answered without TLS", s.url)
	}
	st := resp.TLS
	out := fmt.Sprintf("%s, %s, key exchange %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
	if len(st.PeerCertificates) > 0 {
		c := st.PeerCertificates[0]
		alg := c.PublicKeyAlgorithm.String()
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
			alg += " " + k.Curve.Params().Name
		}
		out += fmt.Sprintf(", %s server certificate (chain of %d) from the built-in CA", alg, len(st.PeerCertificates))
	}
	return out, nil
}
