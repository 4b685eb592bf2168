# halapi — build, run, test, benchmark.
GO        ?= go
BIN       ?= bin/halapi
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# `halapi version` prints these (without them: the VCS stamp, if any).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS   ?= -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build run test unit e2e lint bench clean tools fuzz install package image bench-scale chromium

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/halapi

# Starts a 3-node cluster on https://127.0.0.1:8081-8083 (data in ./data,
# nodes joined with tokens) and prints the API URLs, the CA file, a ready
# bouncer key and an agent certificate with its credentials file (absolute
# paths). Ctrl-C stops it; `make run` again restarts it on the same data.
run: build
	./scripts/run.sh $(BIN)

# Everything CI checks: formatting, vet, staticcheck, unit tests (race),
# end-to-end tests with the real CrowdSec client libraries.
test: lint unit e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...
	$(STATICCHECK) ./...
	@if command -v vagrant >/dev/null 2>&1; then vagrant validate; else echo "vagrant not installed: Vagrantfile not validated"; fi

unit:
	$(GO) test -race -count=1 -timeout 13m ./...

e2e: build tools
	cd e2e && HALAPI_BIN=$(CURDIR)/$(BIN) HALAPI_STEP=$(CURDIR)/bin/step HALAPI_NOTIFICATION_HTTP=$(CURDIR)/bin/notification-http \
	  HALAPI_CHROMIUM=$$(ls /usr/bin/chromium /usr/bin/chromium-headless-shell 2>/dev/null | head -n1) \
	  HALAPI_ARTIFACTS=$(CURDIR)/e2e/artifacts $(GO) test -count=1 -timeout 13m ./...

# The real step CLI, for the e2e test of the step-ca API (TestStepCLI).
# Built once into bin/step (about 2.5 min on 2 cores with cold caches).
tools: bin/step bin/notification-http chromium

bin/step:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/smallstep/cli/cmd/step@v0.29.0

# CrowdSec's own notification-http plugin, unmodified, for the e2e test of
# notifications (TestNotifyPlugin*): built from the crowdsec module as its
# main module (cold: 2 min 43 s on this 2-core VM, mostly module downloads).
bin/notification-http:
	GO=$(GO) ./scripts/build-notification-plugin.sh v1.7.6 http $(CURDIR)/bin

# Debian's Chromium for the browser tests of the web console (TestUI*,
# screenshots in e2e/artifacts/), and the NSS tools that give each test
# browser's profile the cluster CA and an admin certificate. Installed only
# when missing (cold, apt-get update included: 43 s + 7 s on this 2-core VM).
chromium:
	@if { [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-headless-shell ]; } && command -v certutil >/dev/null && command -v pk12util >/dev/null; then \
	  echo "chromium: $$(ls /usr/bin/chromium /usr/bin/chromium-headless-shell 2>/dev/null | head -n1)"; \
	else \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium libnss3-tools; \
	fi

# Fuzz targets (their seed corpora also run in `make unit`). Each one runs
# for FUZZTIME; a failing input is written under the package's
# testdata/fuzz/ and then runs in every `go test`.
FUZZTIME ?= 20s
FUZZ_TARGETS = \
	./fsm:FuzzDecodeApply \
	./fsm:FuzzRestore \
	./fsm:FuzzParseRange \
	./cluster:FuzzReadFrame \
	./cluster:FuzzRPCResponse \
	./lapi:FuzzPostAlerts \
	./lapi/models:FuzzParseDuration \
	./lapi/profiles:FuzzParse \
	./pki:FuzzParseJoinToken \
	./pki:FuzzInspectToken \
	./pki:FuzzJoinHandler

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "== $$name ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s $$pkg; \
	done

# Benchmarks against real processes; prints each figure beside its target.
bench: build
	$(GO) run ./cmd/halapi-bench -bin $(BIN) -json bench-results.json

# Install the binary and the systemd unit (its ExecStart pointed at
# $(PREFIX)/bin). `DESTDIR=/tmp/root make install` stages it.
PREFIX     ?= /usr/local
SYSTEMDDIR ?= /etc/systemd/system
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)/etc/halapi
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/halapi
	sed 's#/usr/bin/halapi#$(PREFIX)/bin/halapi#' dist/systemd/halapi.service > $(DESTDIR)$(SYSTEMDDIR)/halapi.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/halapi.service
	@for u in dist/systemd/*.service; do [ "$$u" = dist/systemd/halapi.service ] && continue; \
	  sed 's#/usr/bin/halapi#$(PREFIX)/bin/halapi#' $$u > $(DESTDIR)$(SYSTEMDDIR)/$$(basename $$u); \
	  chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/$$(basename $$u); done
	[ -e $(DESTDIR)/etc/halapi/halapi.env ] || install -m 0644 dist/package/halapi.env $(DESTDIR)/etc/halapi/halapi.env
	@echo "installed; as root: useradd --system --home-dir /var/lib/halapi --shell /usr/sbin/nologin halapi;"
	@echo "edit /etc/halapi/halapi.env, then: systemctl daemon-reload && systemctl enable --now halapi"

# .deb and .rpm in bin/package/ (nfpm through the Go module proxy; a
# static linux binary). PKG_VERSION must be a semantic version.
GOARCH      ?= $(shell $(GO) env GOARCH)
PKG_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//;s/-/+/'); echo $${v:-0.0.0+git$(COMMIT)})
NFPM         = $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
package:
	mkdir -p bin/package
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/package/halapi ./cmd/halapi
	for p in deb rpm; do \
	  GOARCH=$(GOARCH) PKG_VERSION=$(PKG_VERSION) $(NFPM) package -f dist/nfpm.yaml -p $$p -t bin/package/ || exit 1; \
	done

# The container image (needs a docker daemon): halapi:$(VERSION).
image:
	docker build -f dist/docker/Dockerfile -t halapi:$(VERSION) -t halapi:latest .

# Only the scale phase (storms, a million decisions, 10,000 bouncers...).
bench-scale: build
	$(GO) run ./cmd/halapi-bench -bin $(BIN) -phases scale -json bench-scale-results.json

clean:
	rm -rf bin data bench-results.json bench-scale-results.json e2e/artifacts
