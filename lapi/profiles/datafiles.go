package profiles

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// dataFiles holds the hub data files File (kind "string") and RegexpInFile
// (kind "regexp") read, loaded once each on first use (or when a profile
// naming them by a literal is compiled). As in the reference, lines starting
// with '#' and empty lines are skipped, and a file that cannot be read is
// logged and reads as absent (File: [], RegexpInFile: false).
type dataFiles struct {
	dir    string
	max    int64
	logger *slog.Logger

	mu      sync.Mutex
	strs    map[string][]string
	regexps map[string][]*regexp.Regexp
	failed  map[string]bool // kind+"\x00"+name, logged once
}

func newDataFiles(dir string, max int64, logger *slog.Logger) *dataFiles {
	return &dataFiles{dir: dir, max: max, logger: logger,
		strs: map[string][]string{}, regexps: map[string][]*regexp.Regexp{}, failed: map[string]bool{}}
}

func (d *dataFiles) strings(name string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.strs[name]; ok {
		return l
	}
	lines, ok := d.load(name, "string")
	if !ok {
		return []string{}
	}
	d.strs[name] = lines
	return lines
}

func (d *dataFiles) regexpList(name string) ([]*regexp.Regexp, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.regexps[name]; ok {
		return l, true
	}
	lines, ok := d.load(name, "regexp")
	if !ok {
		return nil, false
	}
	res := make([]*regexp.Regexp, 0, len(lines))
	for _, l := range lines {
		re, err := regexp.Compile(l)
		if err != nil {
			// The reference panics here; halapi refuses the file.
			d.fail(name, "regexp", fmt.Errorf("invalid regexp %q: %w", l, err))
			return nil, false
		}
		res = append(res, re)
	}
	d.regexps[name] = res
	return res, true
}

func (d *dataFiles) fail(name, kind string, err error) {
	k := kind + "\x00" + name
	if !d.failed[k] {
		d.failed[k] = true
		d.logger.Error("data file not available to profile expressions", "file", name, "type", kind, "error", err)
	}
}

// load reads the lines of name; callers hold mu.
func (d *dataFiles) load(name, kind string) ([]string, bool) {
	if d.failed[kind+"\x00"+name] {
		return nil, false
	}
	switch {
	case d.dir == "":
		d.fail(name, kind, errors.New("no hub data directory configured"))
		return nil, false
	case !filepath.IsLocal(name):
		d.fail(name, kind, errors.New("file name must be relative to the data directory (no \"..\", not absolute)"))
		return nil, false
	case len(d.strs)+len(d.regexps) >= MaxDataFiles:
		d.fail(name, kind, fmt.Errorf("more than %d data files", MaxDataFiles))
		return nil, false
	}
	f, err := os.Open(filepath.Join(d.dir, name))
	if err != nil {
		d.fail(name, kind, err)
		return nil, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > d.max {
		d.fail(name, kind, fmt.Errorf("larger than %d bytes", d.max))
		return nil, false
	}
	lines := []string{}
	sc := bufio.NewScanner(io.LimitReader(f, d.max))
	for sc.Scan() {
		t := sc.Text()
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		lines = append(lines, t)
	}
	if err := sc.Err(); err != nil {
		// Like the reference, the lines read before the error are kept.
		d.logger.Warn("data file partly read", "file", name, "error", err)
	}
	return lines, true
}

func regexpInFile(data, name string) bool {
	res, ok := state().files.regexpList(name)
	if !ok {
		return false
	}
	for _, re := range res {
		if re.MatchString(data) {
			return true
		}
	}
	return false
}
