package agent

import "net/url"

// ParseNodeURL checks a node's API URL the way the agent does before it
// uses one (from --server or the member list): http(s)://host[:port][/],
// a usable host (no wildcard address), nothing else. It returns the URL
// as scheme://host:port. serve --api-advertise is held to the same rules,
// so a node never advertises a URL agents would skip.
func ParseNodeURL(s string) (*url.URL, error) { return parseNodeURL(s) }
