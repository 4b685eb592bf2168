package lowprio

import "golang.org/x/sys/unix"

// LowerThreadPriority adds by to the calling OS thread's nice value (on
// Linux a thread's priority is its own: PRIO_PROCESS with a thread id),
// up to 19. Relative, so that a node started at nice 19 keeps its bulk
// thread there rather than raising it (which only root may do).
func LowerThreadPriority(by int) error {
	cur, err := ThreadNice()
	if err != nil {
		return err
	}
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), min(cur+by, 19))
}

// ThreadNice is the calling OS thread's nice value.
func ThreadNice() (int, error) {
	// the raw syscall answers 20 - nice (so that it is never negative)
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}
