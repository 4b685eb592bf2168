package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// raft (hclog) and memberlist (log.Logger) write through the node's slog
// logger, so a node logs in one format, with component=raft|memberlist.
//
// A peer that is down makes raft log "failed to contact", "failed to
// appendEntries to" and "failed to heartbeat to" again and again, and
// memberlist its failed probes every probe interval. repeatLimiter lets
// the first of a kind through, then one per backoff step (1 s doubling to
// 5 min) with the number suppressed meanwhile; a kind quiet for a minute
// starts over. The kind is the message and the peer it names (not the
// error text nor the timing, which change each time).

const (
	repeatFirstStep = time.Second
	repeatMaxStep   = 5 * time.Minute
	repeatQuiet     = time.Minute
	repeatMaxKinds  = 1024
)

type repeatState struct {
	next, last time.Time
	step       time.Duration
	suppressed int
}

type repeatLimiter struct {
	mu    sync.Mutex
	now   func() time.Time
	kinds map[string]*repeatState
}

func newRepeatLimiter() *repeatLimiter {
	return &repeatLimiter{now: time.Now, kinds: map[string]*repeatState{}}
}

// allow reports whether a message of kind is logged now, and how many of
// that kind were suppressed since the last one logged.
func (l *repeatLimiter) allow(kind string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.kinds[kind]
	if s == nil || now.Sub(s.last) > repeatQuiet {
		if s == nil && len(l.kinds) >= repeatMaxKinds {
			for k, v := range l.kinds {
				if now.Sub(v.last) > repeatQuiet {
					delete(l.kinds, k)
				}
			}
			if len(l.kinds) >= repeatMaxKinds {
				return true, 0 // bounded memory: do not limit new kinds
			}
		}
		l.kinds[kind] = &repeatState{next: now.Add(repeatFirstStep), last: now, step: repeatFirstStep}
		return true, 0
	}
	s.last = now
	if now.Before(s.next) {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.suppressed = 0
	s.step = min(2*s.step, repeatMaxStep)
	s.next = now.Add(s.step)
	return true, n
}

// peerKeys are the hclog arguments that name a peer (part of a kind).
var peerKeys = map[string]bool{"peer": true, "server-id": true, "id": true, "addr": true, "address": true, "server": true}

// hclogAdapter is an hclog.Logger writing to slog.
type hclogAdapter struct {
	log   *slog.Logger
	name  string
	level hclog.Level
	args  []any
	lim   *repeatLimiter
}

// newRaftLogger: raft's own Info lines (elections, state changes) only
// when the node logs at debug; warnings and errors always.
func newRaftLogger(l *slog.Logger) hclog.Logger {
	lvl := hclog.Warn
	if l.Enabled(context.Background(), slog.LevelDebug) {
		lvl = hclog.Debug
	}
	return &hclogAdapter{log: l, name: "raft", level: lvl, lim: newRepeatLimiter()}
}

func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level < a.level {
		return
	}
	all := append(append([]any{}, a.args...), args...)
	if level >= hclog.Warn {
		kind := a.name + "\x00" + msg
		for i := 0; i+1 < len(all); i += 2 {
			if k, ok := all[i].(string); ok && peerKeys[k] {
				kind += "\x00" + fmt.Sprint(all[i+1])
			}
		}
		ok, suppressed := a.lim.allow(kind)
		if !ok {
			return
		}
		if suppressed > 0 {
			all = append(all, "repeated", suppressed)
		}
	}
	attrs := make([]any, 0, len(all)+2)
	attrs = append(attrs, "component", a.name)
	for i := 0; i < len(all); i += 2 {
		k := fmt.Sprint(all[i])
		if i+1 >= len(all) {
			attrs = append(attrs, "extra", all[i])
			break
		}
		v := all[i+1]
		if e, ok := v.(error); ok {
			v = e.Error()
		}
		attrs = append(attrs, k, v)
	}
	a.log.Log(context.Background(), slogLevel(level), msg, attrs...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                 { return a.level <= hclog.Trace }
func (a *hclogAdapter) IsDebug() bool                 { return a.level <= hclog.Debug }
func (a *hclogAdapter) IsInfo() bool                  { return a.level <= hclog.Info }
func (a *hclogAdapter) IsWarn() bool                  { return a.level <= hclog.Warn }
func (a *hclogAdapter) IsError() bool                 { return a.level <= hclog.Error }
func (a *hclogAdapter) ImpliedArgs() []any            { return a.args }
func (a *hclogAdapter) Name() string                  { return a.name }
func (a *hclogAdapter) SetLevel(l hclog.Level)        { a.level = l }
func (a *hclogAdapter) GetLevel() hclog.Level         { return a.level }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	c.name = a.name + "." + name
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &stdLogWriter{emit: func(l hclog.Level, msg string) { a.Log(l, msg) }}
}

// newMemberlistLogger: memberlist's log.Logger lines ("[WARN] memberlist:
// ...") through slog, warnings and errors only unless the node logs at
// debug, repeats limited (the kind is the message without digits: the
// peer's name stays, addresses and timings go).
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	minLevel := hclog.Warn
	if l.Enabled(context.Background(), slog.LevelDebug) {
		minLevel = hclog.Debug
	}
	lim := newRepeatLimiter()
	w := &stdLogWriter{emit: func(level hclog.Level, msg string) {
		if level < minLevel {
			return
		}
		msg = strings.TrimPrefix(msg, "memberlist: ")
		var attrs []any
		if level >= hclog.Warn {
			ok, n := lim.allow(withoutDigits(msg))
			if !ok {
				return
			}
			if n > 0 {
				attrs = append(attrs, "repeated", n)
			}
		}
		l.Log(context.Background(), slogLevel(level), msg, append([]any{"component", "memberlist"}, attrs...)...)
	}}
	return log.New(w, "", 0)
}

func withoutDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, s)
}

// stdLogWriter parses "[LEVEL] message" lines of a standard logger.
type stdLogWriter struct {
	emit func(hclog.Level, string)
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := hclog.Info
		if strings.HasPrefix(s, "[") {
			if end := strings.IndexByte(s, ']'); end > 0 {
				switch strings.ToUpper(s[1:end]) {
				case "TRACE":
					level = hclog.Trace
				case "DEBUG":
					level = hclog.Debug
				case "INFO":
					level = hclog.Info
				case "WARN", "WARNING":
					level = hclog.Warn
				case "ERR", "ERROR":
					level = hclog.Error
				}
				s = strings.TrimSpace(s[end+1:])
			}
		}
		w.emit(level, s)
	}
	return len(p), nil
}
