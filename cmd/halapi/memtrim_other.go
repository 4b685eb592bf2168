//go:build !linux

package main

import "errors"

// pageOutFile needs Linux (/proc/self/maps, MADV_PAGEOUT).
func pageOutFile(string) (int64, error) { return 0, errors.ErrUnsupported }
