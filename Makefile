# http-spawn: `make run` builds everything and starts the host; `make test` runs the whole suite.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR    := target/$(GUEST_TARGET)/guest
LISTEN       ?= 127.0.0.1:8080
BASE_URL     ?= http://$(LISTEN)
ARGS         ?=

.PHONY: all build-guest build run test fmt-check clippy k6 k6-smoke browser-test fuzz-api bench reliability clean

all: build

# The guest toolchain target, installed once; rustup answers quickly when it is already there.
$(GUEST_DIR)/.target-installed:
	rustup target add $(GUEST_TARGET)
	mkdir -p $(GUEST_DIR) && touch $@

# The default worker, the shipped ones, and the small test workers (guest/workers/examples), as
# components.
build-guest: $(GUEST_DIR)/.target-installed
	$(CARGO) build -p http-spawn-guest --target $(GUEST_TARGET) --profile guest --lib
	$(CARGO) build -p http-spawn-report --target $(GUEST_TARGET) --profile guest --lib
	$(CARGO) build -p http-spawn-supervisor --target $(GUEST_TARGET) --profile guest --lib
	$(CARGO) build -p http-spawn-kv --target $(GUEST_TARGET) --profile guest --lib
	$(CARGO) build -p http-spawn-test-workers --target $(GUEST_TARGET) --profile guest --examples

build: build-guest
	$(CARGO) build --release -p http-spawn

run: build
	./target/release/http-spawn --config http-spawn.toml --listen $(LISTEN) $(ARGS)

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: build-guest
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole suite: formatting, lints, a short real k6 run, the dashboard in headless Chromium,
# a minute of API fuzzing, unit and end-to-end tests (the HTTP limits, a hostile mix, crashes),
# against a throwaway PostgreSQL (scripts/postgres.sh) unless DATABASE_URL names one.
test: build-guest fmt-check clippy k6-smoke browser-test fuzz-api
	scripts/postgres.sh run -- $(CARGO) test -p http-spawn

# Load-tests a running host (start it with `make run`); START_RATE, PEAK_RATE, RAMP, HOLD tune it.
k6:
	BASE_URL=$(BASE_URL) "$$(scripts/ensure-k6.sh)" run k6.js

# A few seconds of k6.js at a low rate against a debug host on a free loopback port: proves the
# script and the host agree, asserts no timing.
k6-smoke: build-guest
	$(CARGO) build -p http-spawn
	K6="$$(scripts/ensure-k6.sh)" scripts/k6-smoke.sh

# The dashboard end to end in headless Chromium (Debian's, installed when missing) against a
# debug host; the screenshot lands in target/browser/dashboard.png.
browser-test: build-guest
	$(CARGO) build -p http-spawn
	scripts/browser-test.sh

# The API fuzzed by schemathesis (from PyPI, installed when missing) against a debug host's own
# OpenAPI document: every operation, stateful links, every check; no 5xx, no answer the document
# does not describe, no hang. About a minute; FUZZ_BUDGET=long for about six.
FUZZ_BUDGET ?= short
fuzz-api: build-guest
	$(CARGO) build -p http-spawn
	scripts/fuzz-api.sh $(FUZZ_BUDGET)

# Every benchmark, side by side with its baselines, in one run (about 11 minutes on 2 cores):
# prints the tables and writes bench-out/report.md, results.json and SVG plots.
bench: build-guest
	$(CARGO) build --release -p http-spawn -p http-spawn-bench
	HTTP_SPAWN_BASELINE_GUEST="$$(scripts/build-baseline-guest.sh)" ./target/release/http-spawn-bench --out bench-out

# The reliability suite (issue #12), about 15 minutes on 2 cores: hostile guests mixed into
# thousands of submissions a second, a soak of a million tasks, k6 past the host's capacity,
# SIGKILL under load, then `scripts/fuzz-api.sh long` and the HTTP connection tests where they
# exist. One line per case with its figures and PASS/FAIL; non-zero exit if any case fails.
# RELIABILITY_SCALE=0.05 scales its own cases down for a quick look, RELIABILITY_ONLY picks
# cases (hostile,storm,soak,overload,lag,crash,fuzz-api,http,store-lock,schedules); see
# RELIABILITY.md.
reliability: build-guest
	$(CARGO) build --release -p http-spawn -p http-spawn-bench
	$(CARGO) build -p http-spawn
	scripts/ensure-k6.sh >/dev/null
	./target/release/http-spawn-reliability

clean:
	$(CARGO) clean
