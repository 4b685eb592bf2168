package profiles

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// ReadFiles reads a profiles file the way Load does (the "<path>.local"
// overlay first, then the file) and returns both the compiled profiles and
// the bytes they came from: the overlay and the file joined into one
// multi-document YAML ("---" between them), which Parse compiles to the
// same profiles. These bytes are what `halapi profiles apply` replicates
// and what a node hashes to compare its file with the cluster's.
func ReadFiles(path string) ([]byte, []*Profile, error) {
	if path == "" {
		return nil, nil, errors.New("empty profiles path")
	}
	var raws []rawProfile
	var joined []byte
	localPath := path + ".local"
	local, err := os.ReadFile(localPath)
	switch {
	case err == nil:
		r, err := decodeDocuments(local, localPath)
		if err != nil {
			return nil, nil, err
		}
		raws = append(raws, r...)
		joined = append(joined, local...)
		if len(joined) > 0 && !bytes.HasSuffix(joined, []byte("\n")) {
			joined = append(joined, '\n')
		}
		joined = append(joined, "---\n"...)
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, nil, fmt.Errorf("reading profiles overlay: %w", err)
	}
	base, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading profiles file: %w", err)
	}
	r, err := decodeDocuments(base, path)
	if err != nil {
		return nil, nil, err
	}
	raws = append(raws, r...)
	profs, err := build(raws)
	if err != nil {
		return nil, nil, err
	}
	return append(joined, base...), profs, nil
}
