package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// An operator's certificate (RoleAdmin) goes into a browser, which imports
// PKCS#12 files: AdminP12 packs the leaf, its key and the CA chain
// (intermediate and root) with PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC)
// and an HMAC-SHA-256 MAC (go-pkcs12's Modern2023: what OpenSSL 3 writes;
// Firefox, Chromium and current Windows and macOS import it). The password
// protects the key at rest; the caller picks it (a file) or lets
// NewP12Password draw one. The node never sees it: the CLI builds the
// file from the PEM the admin socket returned.

// MaxP12Password bounds a PKCS#12 password read from a file.
const MaxP12Password = 1024

// NewP12Password returns a random password (128 bits, hex): enough for
// the 2,048 KDF iterations of the format.
func NewP12Password() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// ReadP12Password reads a password from path: the first line, without
// its line ending; it must not be empty.
func ReadP12Password(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--p12-password-file: %w", err)
	}
	if len(b) > MaxP12Password+2 {
		return "", fmt.Errorf("--p12-password-file: longer than %d bytes", MaxP12Password)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", errors.New("--p12-password-file: the first line is empty")
	}
	return pw, nil
}

// AdminP12 encodes m (leaf first in CertPEM, then intermediates; the root
// in CAPEM; a PKCS#8 key) as a PKCS#12 file protected by password.
func AdminP12(m *ClientMaterial, password string) ([]byte, error) {
	if password == "" {
		return nil, errors.New("pkcs12: empty password")
	}
	chain, err := parseCerts(m.CertPEM)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("pkcs12: no certificate in the issued chain: %v", err)
	}
	roots, err := parseCerts(m.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: CA: %w", err)
	}
	blk, _ := pem.Decode(m.KeyPEM)
	if blk == nil {
		return nil, errors.New("pkcs12: no private key")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: private key: %w", err)
	}
	return pkcs12.Modern2023.Encode(key, chain[0], append(chain[1:], roots...), password)
}

// WriteAdminP12 writes AdminP12 of m as <name>.p12 (0600) into dir and
// returns its path.
func WriteAdminP12(dir, name string, m *ClientMaterial, password string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	data, err := AdminP12(m, password)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(abs, name+".p12")
	return path, writeFileAtomic(path, data, 0o600)
}
