//go:build !unix

package main

func privateUmask() {}

func fdLimit() uint64 { return 0 }
