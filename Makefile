# The commands people run. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: all build run demo test fmt lint check bench clean

all: build

build:
	$(CARGO) build --release

# The quick start: a local database under ./data with a live demo drop.
demo:
	$(CARGO) run --release -- serve --demo

run:
	$(CARGO) run --release -- serve

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Everything: formatting, lints, unit tests, property tests, integration tests against the
# real server and the real binary.
test: lint
	$(CARGO) test --all-targets

# Prints a markdown table and writes target/bench/latest.json (see docs/benchmarks.md).
# BENCH_ARGS="--duration 3s --rounds 1" for a quick look.
bench:
	$(CARGO) run --release -- bench $(BENCH_ARGS)

clean:
	$(CARGO) clean
