//go:build !linux

package lowprio

import "errors"

var errNoThreadNice = errors.New("per-thread priority is Linux-only")

// LowerThreadPriority is Linux-only.
func LowerThreadPriority(int) error { return errNoThreadNice }

// ThreadNice is Linux-only.
func ThreadNice() (int, error) { return 0, errNoThreadNice }
