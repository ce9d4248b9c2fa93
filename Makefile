# Junction: the two commands a newcomer needs are `make run` and `make test`.
SWIFT ?= swift
DATA_DIR ?= data

.PHONY: setup build run test soak bench clean

setup:
	@./scripts/setup.sh

build: setup
	$(SWIFT) build -c release --product junction

# Set up, build, and start the gateway on the embedded defaults.
run: build
	.build/release/junction serve --config Config/junction.json --plugins plugins.json --data-dir $(DATA_DIR)

# Set up, build the tests once, run the whole suite (a run that hangs prints
# every thread's backtrace and fails after 30 minutes: scripts/run-tests.sh).
test: setup
	$(SWIFT) build --build-tests
	./scripts/run-tests.sh

# The long reliability suite (crash trials, fuzzing, load, disk full); the
# figures it prints are in docs/RELIABILITY.md.
soak: setup
	$(SWIFT) build --build-tests
	./scripts/soak.sh

# Throughput and latency figures; see Benchmarks/README.md.
bench: setup
	./scripts/setup-bench.sh
	$(SWIFT) build -c release --product junction
	$(SWIFT) build -c release --product junction-bench
	bash -o pipefail -c '.build/release/junction-bench | tee .build/bench.md'
	python3 scripts/plot-bench.py .build/bench.md .build/bench-cpeers.png

clean:
	rm -rf .build
