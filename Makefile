# tcptrace. `make` builds, `make test` runs every test (as root: the
# end-to-end tests load BPF programs), `make generate` rebuilds the BPF
# object and its Go bindings (needs clang; `go build` does not).

GO ?= go
BIN ?= tcptrace
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
APT_GET = DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o=Dpkg::Use-Pty=0

# What the BPF build needs (Debian's packages): clang and llvm-strip for
# bpf2go, libbpf's headers, bpftool to regenerate vmlinux.h.
BUILD_DEPS = clang llvm libbpf-dev bpftool
# What the end-to-end tests need: ip netns, nft, a Prometheus server to
# scrape --metrics, podman (with runc: crun refuses a hybrid cgroup layout)
# to run a real container.
TEST_DEPS = iproute2 nftables prometheus podman runc

.PHONY: all build image test unit e2e vmtest generate check-generated bpf-check vmlinux deps-build deps-test bench fmt-check vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/tcptrace

# The alert rules as a PrometheusRule: the plain rules file under spec.
deploy/kubernetes/prometheusrule.yaml: deploy/prometheus/tcptrace.rules.yml
	{ printf '%s\n' '# Generated from deploy/prometheus/tcptrace.rules.yml by make: edit that file.' \
		'apiVersion: monitoring.coreos.com/v1' 'kind: PrometheusRule' 'metadata:' '  name: tcptrace' \
		'  namespace: tcptrace' '  labels:' '    app.kubernetes.io/name: tcptrace' 'spec:'; \
	  sed -n '/^groups:/,$$p' $< | sed 's/^/  /'; } > $@

# The node agent's OCI image, built offline by podman from an empty base
# (deploy/image/Containerfile): tagged $(IMAGE):$(VERSION) and $(IMAGE):latest.
IMAGE ?= localhost/tcptrace
image:
	ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o "$$ctx/tcptrace" ./cmd/tcptrace && \
	podman build --pull=never -q -f deploy/image/Containerfile \
		--label org.opencontainers.image.version=$(VERSION) \
		--label org.opencontainers.image.title=tcptrace \
		-t $(IMAGE):$(VERSION) -t $(IMAGE):latest "$$ctx"

# The whole suite: unit tests, then the end-to-end tests against this
# kernel. Installs what the tests need first. Each test is named as it
# passes; a failing test's output is shown whole (.ci/test-progress.awk);
# pipefail keeps go test's exit status.
test: SHELL := /bin/bash
test: .SHELLFLAGS := -o pipefail -c
test: deps-test
	$(GO) test -count=1 -v ./... 2>&1 | awk -f .ci/test-progress.awk

unit:
	$(GO) test -count=1 ./tracer ./cmd/...

e2e: deps-test
	$(GO) test -count=1 -v ./e2e

# The end-to-end suite on Debian's 5.10, 6.1 and 6.12 kernels under QEMU (TCG),
# once per probe path, then a Markdown table. `make vmtest KERNEL=6.1` runs
# one kernel. Kernels are cached in /var/cache/tcptrace-vmtest (e2e/vm/README.md).
KERNEL ?=
vmtest:
	e2e/vm/matrix.sh $(KERNEL)

generate: deps-build
	cd tracer && $(GO) generate ./...

# CI: the committed bpf2go outputs must be what the sources produce.
check-generated: generate
	@git diff --exit-code --stat -- tracer/ || { echo "generated files are not up to date: run make generate and commit the result"; exit 1; }
	@test -z "$$(git status --porcelain -- tracer/)" || { git status --porcelain -- tracer/; echo "make generate produced files that are not committed"; exit 1; }

# Every BPF source compiles on its own, with the flags `make generate` uses
# (tracer/gen.go's -cflags and what bpf2go adds): a detector file or header
# that leans on what another file included before it fails here, as it
# would in an editor. bpf2go builds only bpf/tcptrace.bpf.c, which includes
# the detectors. A header is checked as a file of its own, where its
# functions have no caller.
BPF_CHECK_FLAGS = $(shell sed -n 's/.*-cflags "\([^"]*\)".*/\1/p' tracer/gen.go) -mcpu=v1 -target bpfel -D__TARGET_ARCH_x86 -Ibpf -fsyntax-only
bpf-check: deps-build
	@for f in bpf/*.bpf.c; do clang $(BPF_CHECK_FLAGS) $$f || { echo "bpf-check: $$f does not compile on its own"; exit 1; }; done
	@for f in bpf/*.bpf.h; do clang $(BPF_CHECK_FLAGS) -Wno-unused-function -x c $$f || { echo "bpf-check: $$f does not compile on its own"; exit 1; }; done

# bpf/vmlinux.h: every type of the running kernel, from its BTF. CO-RE
# relocates field offsets at load time, so one header serves every kernel.
vmlinux: deps-build
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

# Benchmarks: printed, and collected as Markdown in bench.md for docs/cost.md
# (each e2e benchmark appends its table; the Go ones are summarised).
BENCH_MD ?= $(CURDIR)/bench.md
bench:
	@command -v bpftrace >/dev/null && command -v iperf3 >/dev/null || { apt-get update -qq && $(APT_GET) install bpftrace iperf3 >/dev/null; }
	@printf '## make bench, %s, kernel %s, %s CPUs\n\n' "$$(date -u +%F)" "$$(uname -r)" "$$(nproc)" > $(BENCH_MD)
	$(GO) test -run '^$$' -bench . -benchmem ./tracer | tee bench-go.txt
	@{ printf '### User space, per event (Go benchmarks)\n\n| benchmark | ns per event | events per second per core | allocations |\n|---|---|---|---|\n'; \
	  awk '/^Benchmark/ { a = ""; for (i = 4; i <= NF; i++) if ($$i == "allocs/op") a = $$(i-1); printf "| %s | %s | %.0f | %s |\n", $$1, $$3, 1e9/$$3, a }' bench-go.txt; printf '\n'; } >> $(BENCH_MD)
	@rm -f bench-go.txt
	TCPTRACE_BENCH_MD=$(BENCH_MD) $(GO) test -count=1 -run '^$$' -bench 'BPF|Startup|Overhead|Storm|EventRate|Churn' -benchtime 1x -timeout 30m -v ./e2e
	@echo "bench: report in $(BENCH_MD)"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt: not formatted: $$out"; exit 1; }

vet:
	$(GO) vet ./...

deps-build:
	@command -v clang >/dev/null && command -v llvm-strip >/dev/null && test -f /usr/include/bpf/bpf_helpers.h && command -v bpftool >/dev/null || \
		{ apt-get update -qq && $(APT_GET) install $(BUILD_DEPS) >/dev/null; }

deps-test:
	@command -v ip >/dev/null && command -v nft >/dev/null && command -v prometheus >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null || \
		{ apt-get update -qq && $(APT_GET) install --no-install-recommends $(TEST_DEPS) >/dev/null; }

clean:
	rm -f $(BIN)
