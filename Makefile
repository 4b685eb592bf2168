# halapi — build, run, test, benchmark.
GO        ?= go
BIN       ?= bin/halapi
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test unit e2e lint bench clean tools fuzz bench-scale

all: build

build:
	$(GO) build -o $(BIN) ./cmd/halapi

# Starts a local halapi on 127.0.0.1:8080 (data in ./data) and prints a
# ready bouncer key and machine credentials file. Ctrl-C stops it.
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
	$(GO) test -race -count=1 -timeout 10m ./...

e2e: build tools
	cd e2e && HALAPI_BIN=$(CURDIR)/$(BIN) HALAPI_STEP=$(CURDIR)/bin/step $(GO) test -count=1 -timeout 10m ./...

# The real step CLI, for the e2e test of the step-ca API (TestStepCLI).
# Built once into bin/step (about 2.5 min on 2 cores with cold caches).
tools: bin/step

bin/step:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/smallstep/cli/cmd/step@v0.29.0

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

# Only the scale phase (storms, a million decisions, 10,000 bouncers...).
bench-scale: build
	$(GO) run ./cmd/halapi-bench -bin $(BIN) -phases scale -json bench-scale-results.json

clean:
	rm -rf bin data bench-results.json bench-scale-results.json
