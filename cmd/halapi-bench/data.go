package main

import (
	"strconv"
)

// Addresses: index i of a data set maps to a distinct IPv4 address inside
// one /8. The index is multiplied by an odd constant modulo 2^24, which is a
// bijection, so the addresses are distinct but scattered over the /8 instead
// of being consecutive.
const (
	ipSpace   = 1 << 24
	ipScatter = 2654435761 // odd

	importNet = 11 // decisions loaded for the query, stream and memory phases
	ingestNet = 12 // alerts pushed in the ingestion phase
)

func benchIP(net byte, i int) uint32 {
	return uint32(net)<<24 | uint32((uint64(i)*ipScatter)&(ipSpace-1))
}

func appendIP(b []byte, ip uint32) []byte {
	b = strconv.AppendUint(b, uint64(ip>>24), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(ip>>16&0xff), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(ip>>8&0xff), 10)
	b = append(b, '.')
	return strconv.AppendUint(b, uint64(ip&0xff), 10)
}

func ipString(ip uint32) string { return string(appendIP(nil, ip)) }

// appendImportAlert appends one cscli-import style alert carrying the
// decisions for data-set indexes [start, start+n).
func appendImportAlert(b []byte, start, n int, now string) []byte {
	b = append(b, `{"scenario":"import","scenario_hash":"","scenario_version":"","message":"","events_count":1,"start_at":"`...)
	b = append(b, now...)
	b = append(b, `","stop_at":"`...)
	b = append(b, now...)
	b = append(b, `","capacity":0,"leakspeed":"","simulated":false,"events":[],"source":{"scope":"","value":""},"decisions":[`...)
	for i := start; i < start+n; i++ {
		if i > start {
			b = append(b, ',')
		}
		b = append(b, `{"duration":"24h","origin":"cscli-import","scenario":"import","scope":"Ip","type":"ban","value":"`...)
		b = appendIP(b, benchIP(importNet, i))
		b = append(b, `"}`...)
	}
	return append(b, `]}`...)
}

// appendAgentAlert appends one alert as a crowdsec agent pushes it after an
// ssh brute force: source, two events with meta, and one ban decision.
func appendAgentAlert(b []byte, ip uint32, now string) []byte {
	var ipb [15]byte
	ips := appendIP(ipb[:0], ip)
	b = append(b, `{"capacity":5,"decisions":[{"duration":"4h","origin":"crowdsec","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"`...)
	b = append(b, ips...)
	b = append(b, `"}],"events":[`...)
	for e := 0; e < 2; e++ {
		if e > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"meta":[{"key":"log_type","value":"ssh_failed-auth"},{"key":"source_ip","value":"`...)
		b = append(b, ips...)
		b = append(b, `"},{"key":"target_user","value":"root"}],"timestamp":"`...)
		b = append(b, now...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"events_count":6,"labels":null,"leakspeed":"10s","message":"Ip `...)
	b = append(b, ips...)
	b = append(b, ` performed 'crowdsecurity/ssh-bf' (6 events over 3s) at `...)
	b = append(b, now...)
	b = append(b, `","remediation":true,"scenario":"crowdsecurity/ssh-bf","scenario_hash":"4441dcff07020f6690d998b7101e642359ba405c2abb83565bbbdcee36de280f","scenario_version":"0.3","simulated":false,"source":{"as_name":"EXAMPLE-AS","as_number":"64500","cn":"FR","ip":"`...)
	b = append(b, ips...)
	b = append(b, `","latitude":48.85,"longitude":2.35,"range":"12.0.0.0/8","scope":"Ip","value":"`...)
	b = append(b, ips...)
	b = append(b, `"},"start_at":"`...)
	b = append(b, now...)
	b = append(b, `","stop_at":"`...)
	b = append(b, now...)
	return append(b, `"}`...)
}

// agentBatch builds the body of one POST /v1/alerts with n agent alerts
// for ingestion-set indexes [first, first+n).
func agentBatch(first, n int, now string) []byte {
	b := make([]byte, 0, n*1100+2)
	b = append(b, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAgentAlert(b, benchIP(ingestNet, first+i), now)
	}
	return append(b, ']')
}
