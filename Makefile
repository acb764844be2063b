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

clean:
	$(CARGO) clean
