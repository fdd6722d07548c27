# mayu: `make demo` runs a machine through the boot flow, `make test` runs
# the tests. Both install what they need first (as root on Debian).

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# The suite is sized for CI's 2 cores; -p 1 keeps etcd-heavy packages from
# starving each other.
TESTFLAGS ?= -count=1 -timeout 45m -p 1
# Every build here is the release's (scripts/release.sh): static (no cgo;
# nothing in the tree needs it) and without local paths. Compiler flags are
# part of each package's build-cache key, so building `make build` and the
# tests the same way lets the release test (packaging/) only link, rather
# than compile every package a second time (minutes on 2 cores).
export CGO_ENABLED ?= 0
export GOFLAGS := $(strip $(GOFLAGS) -trimpath)

.PHONY: all build vmlab upstream fleetgen etcd deps test test-short fuzz lint demo flatcar-demo clean bench bench-deps release

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/mayu ./cmd/mayuctl

# The lab tool: the demo, the test VMs, the config the benchmarks run.
vmlab:
	$(GO) build -o bin/vmlab ./internal/cmd/vmlab

# The fleet generator: fills an etcd with machines and leases in mayu's
# key format (internal/fleet; bench/fleet.sh measures mayu on it).
fleetgen:
	$(GO) build -o bin/fleetgen ./internal/cmd/fleetgen

# The artifact upstream of the tests and bench/artifacts.sh: an HTTP file
# server that logs and counts what it sends (internal/upstream).
upstream:
	$(GO) build -o bin/upstream ./internal/cmd/upstream

# Real etcd, etcdctl and etcdutl (snapshot restore, docs/operations.md)
# for tests and the demo, built from the versions pinned in go.mod (`go
# install pkg@version` refuses their replace directives, so they are built
# inside this module, listed as tools in go.mod).
etcd: bin/etcd bin/etcdctl bin/etcdutl
bin/etcd: go.mod go.sum
	$(GO) build -o bin/etcd go.etcd.io/etcd/server/v3
bin/etcdctl: go.mod go.sum
	$(GO) build -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3
bin/etcdutl: go.mod go.sum
	$(GO) build -o bin/etcdutl go.etcd.io/etcd/etcdutl/v3

# System packages and Go modules.
deps:
	scripts/install-deps.sh
	$(GO) mod download
	cd packaging/oci && $(GO) mod download

# FUZZTIME: how long each fuzz target runs in `make test` (0 skips them).
FUZZTIME ?= 4s
test: deps build etcd
	PATH="$(CURDIR)/bin:$$PATH" $(GO) test $(TESTFLAGS) ./...
	@if [ "$(FUZZTIME)" != 0 ]; then GO=$(GO) FUZZFLAGS=-fuzzminimizetime=1x scripts/fuzz.sh $(FUZZTIME); fi

# Fuzz every parser for a short while each.
fuzz:
	scripts/fuzz.sh 30s

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

# The demo boots a VM: `bin/vmlab demo` (internal/cmd/vmlab/demo.go) builds
# its installer and OS image, makes a lab network and runs mayu and qemu.
# REPLICAS=3 runs three replicas on a 3-member etcd, FW=uefi boots with OVMF.
demo: deps build vmlab etcd
	bin/vmlab demo

# The demo through etc/examples/flatcar: a VM installs Flatcar Container
# Linux from the release files the operator fetched into FLATCAR_DIR (the
# PXE kernel and initrd, the image, each with its .DIGESTS.asc, and
# Flatcar_Image_Signing_Key.asc; README "Installing Flatcar Container
# Linux"), added as artifacts checked against the signed digests. FW=uefi
# boots OVMF. Slow under TCG (an hour or more); not part of `make test`.
FLATCAR_DIR ?=
FLATCAR_KEY ?=
flatcar-demo:
	@test -n "$(FLATCAR_DIR)" || { echo 'make flatcar-demo FLATCAR_DIR=DIR: DIR holds the Flatcar release files (README "Installing Flatcar Container Linux")' >&2; exit 2; }
	$(MAKE) deps build vmlab upstream etcd
	bin/vmlab demo -flatcar="$(FLATCAR_DIR)" -flatcar-key="$(FLATCAR_KEY)"

# Benchmarks against the peers (bench/README.md): builds everything, installs
# the peers (bench-deps), runs every bench script and the Go benchmarks, and
# prints the tables (also written to $(BENCH_OUT)). Not part of `make test`.
BENCH_OUT ?= bin/bench-results.md
bench: deps bench-deps build vmlab upstream fleetgen etcd
	BENCH_OUT=$(BENCH_OUT) bench/all.sh

# Only what the benchmarks need: Kea, dnsmasq, tftpd-hpa, nginx, wrk.
bench-deps:
	bench/install-deps.sh

# A release into dist/ (scripts/release.sh; README "Installing from a
# release"): static, stripped mayu and mayuctl for linux/amd64 and arm64,
# a Debian package per architecture, an OCI image (layout and tar, built
# without a container daemon) and SHA256SUMS. ARCHES="amd64" builds one.
ARCHES ?= amd64 arm64
release:
	GO=$(GO) VERSION=$(VERSION) ARCHES="$(ARCHES)" DIST=dist scripts/release.sh

clean:
	rm -rf bin .demo dist
