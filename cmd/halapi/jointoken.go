package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFile bounds what --join-token-file reads (a join token is ~100
// bytes).
const maxTokenFile = 64 << 10

// readJoinTokenFile sets joinToken from --join-token-file (a path, or "-"
// for stdin): a token on the command line is visible to every user of
// the host in ps and /proc.
func (f *pkiFlags) readJoinTokenFile(stdin io.Reader) error {
	if f.joinTokenFile == "" {
		return nil
	}
	if f.joinToken != "" {
		return errors.New("--join-token and --join-token-file exclude each other")
	}
	var r io.Reader = stdin
	if f.joinTokenFile != "-" {
		fh, err := os.Open(f.joinTokenFile)
		if err != nil {
			return fmt.Errorf("--join-token-file: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	b, err := io.ReadAll(io.LimitReader(r, maxTokenFile+1))
	if err != nil {
		return fmt.Errorf("--join-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case len(b) > maxTokenFile:
		return errors.New("--join-token-file: larger than 64 KiB, not a join token")
	case tok == "":
		return fmt.Errorf("--join-token-file %s is empty", f.joinTokenFile)
	case strings.ContainsAny(tok, " \t\r\n"):
		return fmt.Errorf("--join-token-file %s: one token expected, found several words or lines", f.joinTokenFile)
	}
	f.joinToken = tok
	return nil
}
