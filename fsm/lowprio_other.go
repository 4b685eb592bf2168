//go:build !linux

package fsm

import "errors"

var errNoThreadNice = errors.New("per-thread priority is Linux-only")

func lowerThreadPriority(int) error { return errNoThreadNice }

func threadNice() (int, error) { return 0, errNoThreadNice }
