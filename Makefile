# Fieldpass. `make help` lists the targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/fieldpass/fieldpass.Version=$(VERSION)
BINARIES  := fieldpass-broker fieldpass-connector fieldpass
TEST_FLAGS ?= -race -timeout 12m

.PHONY: help build test lint fmt bench bench-portal bench-fleet bench-idle demo demo-reset dist fuzz assets clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/fieldpass-broker, bin/fieldpass-connector, bin/fieldpass
	@mkdir -p bin
	$(foreach b,$(BINARIES),CGO_ENABLED=0 $(GO) build -trimpath -tags enroll_https -ldflags '$(LDFLAGS)' -o bin/$(b) ./cmd/$(b) &&) true

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

test: lint ## run every test (real Postgres, WireGuard, binaries) with -race
	$(GO) test $(TEST_FLAGS) ./...
	cd deploy/kubernetes && $(GO) test $(TEST_FLAGS) ./...
	cd deploy/build && $(GO) vet ./... && $(GO) test $(TEST_FLAGS) ./...

FUZZTIME ?= 30s
FUZZ_TARGETS = tunnel:FuzzReadStreamHeader tunnel:FuzzReadStreamStatus tunnel:FuzzReadHello \
  tunnel:FuzzReadHelloReply tunnel:FuzzReadStreamOpen tunnel:FuzzReadEnrollAsk tunnel:FuzzReadEnrollAnswer wgnet:FuzzIsSYNTo \
  connector:FuzzParseNetlink portal:FuzzLocalReturn portal:FuzzParseWebHost \
  .:FuzzParseDuration .:FuzzVerifyAuditExport

fuzz: ## fuzz every parser of outside input for FUZZTIME (30s) each
	for t in $(FUZZ_TARGETS); do \
	  $(GO) test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s || exit 1; done

bench: ## the person's path (real binaries, CLI forward over TLS) and the broker's throughput and opens, each vs raw loopback (see bench/README.md)
	FIELDPASS_BENCH=1 $(GO) test ./bench -run '^$$' -bench '^BenchmarkPath$$' -benchtime 1x -count 1 -timeout 25m
	$(GO) test ./bench -run '^$$' -bench 'Throughput|StreamOpen' -benchtime 3x -count 1
	$(GO) test ./broker -run '^$$' -bench 'SessionOpen|FleetStream' -benchtime 200x -count 1

bench-portal: ## the browser side in real Chromium: page loads, a device UI through the proxy vs directly, recording size
	FIELDPASS_BENCH=1 $(GO) test ./e2e -run '^TestPortalFigures$$' -count 1 -v -timeout 10m | grep -E 'portal page|device web UI|recording:|^(ok|FAIL|---)'

bench-fleet: ## broker RSS and CPU per idle device, and a restart after SIGKILL, at 1000 devices (FIELDPASS_BENCH_DEVICES=10000 make bench-fleet: 10,000)
	FIELDPASS_BENCH=1 $(GO) test ./bench -run '^$$' -bench Fleet -benchtime 1x -count 1 -timeout 40m

bench-idle: ## idle bytes per device per day on the wire
	FIELDPASS_BENCH=1 $(GO) test ./bench -run '^$$' -bench IdleWire -benchtime 1x -count 1 -timeout 30m

DEMO_BINARIES := $(BINARIES) fieldpass-devidp fieldpass-demo

demo: ## the whole system on loopback: Postgres, OIDC logins, broker and portal, two devices (Ctrl-C stops it)
	@command -v $(GO) >/dev/null || { echo "demo: Go is needed to build it: install Go 1.26 (https://go.dev/dl/; Debian: apt-get install golang)" >&2; exit 1; }
	@mkdir -p bin
	@echo "Building $(DEMO_BINARIES)..."
	@CGO_ENABLED=0 $(GO) build -trimpath -tags enroll_https -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(DEMO_BINARIES))
	@bin/fieldpass-demo

demo-reset: ## wipe the demo's data (its Postgres, keys, logins): the next make demo starts afresh
	@CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/fieldpass-demo && bin/fieldpass-demo reset

# The connector's field hardware, as GOARCH[/GOARM or GOMIPS]:NAME. The
# connector's TestSize builds the same list and holds each to 8 MiB.
CONNECTOR_TARGETS := arm/5:armv5 arm/7:armv7 arm64:arm64 mips/softfloat:mips mipsle/softfloat:mipsle amd64:amd64

dist: ## cross-compile the stripped connector for field hardware (armv5, armv7, arm64, mips, mipsle, amd64) and the broker; SHA256SUMS; print sizes
	@rm -rf dist && mkdir -p dist
	@set -e; for t in $(CONNECTOR_TARGETS); do \
	  spec=$${t%%:*}; name=$${t##*:}; arch=$${spec%%/*}; variant=$${spec#$$arch}; variant=$${variant#/}; \
	  case $$arch in arm) extra="GOARM=$$variant";; mips|mipsle) extra="GOMIPS=$$variant";; *) extra=;; esac; \
	  echo "building fieldpass-connector-linux-$$name"; \
	  env CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $$extra $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/fieldpass-connector-linux-$$name ./cmd/fieldpass-connector; \
	done
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/fieldpass-broker-linux-amd64 ./cmd/fieldpass-broker
	@cd dist && sha256sum fieldpass-* > SHA256SUMS
	@cd dist && for f in fieldpass-*; do s=$$(wc -c < $$f); printf '%-36s %9d bytes  %5s MiB\n' $$f $$s $$(awk "BEGIN{printf \"%.2f\", $$s/1048576}"); done
	@echo "dist/SHA256SUMS written"

assets: ## re-vendor the portal's npm packages (pinned in portal/assets/package-lock.json); needs Node
	./portal/assets/vendor.sh

clean: ## remove build output
	rm -rf bin dist

.PHONY: config-reference
config-reference: ## regenerate docs/CONFIG.md from the three binaries' flags (go test ./docs/configref checks it)
	$(GO) run ./docs/configref -o docs/CONFIG.md

# The image and package builders are a Go module of their own (deploy/build):
# their libraries (go-containerregistry, nfpm) stay out of the server's go.mod.
# SOURCE_DATE_EPOCH (default: the commit's time) fixes every timestamp.
.PHONY: images packages
images: ## reproducible OCI images of the broker and connector (amd64, arm64), no Docker needed: dist/images/<name>
	cd deploy/build && $(GO) run . images -repo $(CURDIR) -version $(VERSION) -o $(CURDIR)/dist/images

packages: ## .deb and .rpm (broker, connector), .ipk (connector), plain connector binaries and SHA256SUMS: dist/
	cd deploy/build && $(GO) run . packages -repo $(CURDIR) -version $(VERSION) -o $(CURDIR)/dist

bench-field: ## the person's path across a shaped 20 Mbit/s cellular-like carrier (loss, 300 ms) vs raw TCP, and the connector's RSS
	FIELDPASS_BENCH=1 $(GO) test ./e2e -run '^TestFieldBench' -count 1 -v -timeout 60m | grep -vE '^=== (RUN|PAUSE|CONT)'

.PHONY: bench-failover
bench-failover: ## how long a broker's 1000 devices are held by none when one of three brokers is killed, and when one stops cleanly
	FIELDPASS_BENCH=1 $(GO) test ./bench -run '^$$' -bench Failover -benchtime 1x -count 1 -timeout 30m
bench-fleet: bench-failover

.PHONY: bench-tun
bench-tun: ## (root) the person's path with the broker on a kernel TUN interface (serve --tun) beside netstack mode, in a network namespace of its own
	FIELDPASS_BENCH=1 FIELDPASS_BENCH_TUN=1 $(GO) test ./bench -run '^$$' -bench '^BenchmarkPath$$' -benchtime 1x -count 1 -timeout 60m
