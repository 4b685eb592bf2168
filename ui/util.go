package ui

import "net/url"

func urlQuery(s string) string   { return url.QueryEscape(s) }
func pathEscape(s string) string { return url.PathEscape(s) }
