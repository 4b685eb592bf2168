package testharness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// CLI runs `bin ARGS --data-dir dataDir` (an admin command against a node's
// data dir) within timeout and returns its standard output; the error
// holds both outputs.
func CLI(ctx context.Context, timeout time.Duration, bin, dataDir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	full := append(append([]string{}, args...), "--data-dir", dataDir)
	cmd := exec.CommandContext(ctx, bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, ctx.Err())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("halapi %s: %w\nstdout: %s\nstderr: %s",
			strings.Join(full, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}
