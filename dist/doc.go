// Package dist holds what installs and runs halapi outside a checkout:
// the systemd units (server and agent), the nfpm package config, the
// container image and compose file, the Kubernetes manifest and the
// Grafana dashboard. Its only Go code is the tests that validate those
// files in `make test` (structure, files they name, tools when installed).
//
// It must not hold code the halapi binary runs, nor artefacts that need
// the network to validate (the image is built only with HALAPI_TEST_IMAGE=1).
package dist
