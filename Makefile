# gatewatch: `make demo` and `make test` are the two setup commands on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_STATE := .gatewatch/test-kafka
# Benchmarks run by `make bench`; reliability.py has its own target (`make reliability`). Those that
# need the Kafka broker run while it is up; the others (the proxies' latency) run before it starts:
# an idle broker's ~100 threads wake for ~30 ms of CPU a second, noise in a p99 on 2 shared cores.
KAFKA_BENCHES := bench/collector.py bench/detectors.py bench/pipeline.py
BENCHES := $(filter-out bench/reliability.py $(KAFKA_BENCHES),$(wildcard bench/*.py))
# Debian packages that tests and benchmarks drive as real peers.
DEBIAN_TOOLS := wrk nginx chromium

.PHONY: demo test lint bench eval reliability install debian-deps clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

## install: the virtualenv, the package, and the proxies' request path compiled with mypyc
## (proxy/compiled.py; a no-op when current; GATEWATCH_COMPILED=0 skips it and runs plain Python)
## Bytecode too, as pip writes for an installed wheel: an editable install has none, and where
## PYTHONDONTWRITEBYTECODE is set every process compiled our modules from source at start (~1 MB of
## a sidecar's RSS). A stale .pyc is never used: Python checks it against its source.
install: $(STAMP)
	@$(BIN)/gatewatch dev compile
	@$(PY) -m compileall -q gatewatch proxy collector pipelines detectors dashboards demo >/dev/null

## demo: install, run the whole loop on the embedded default, print its summary
demo: install
	$(BIN)/gatewatch demo

## debian-deps: install wrk, nginx and chromium if missing (needs root, as on CI)
debian-deps:
	@missing=""; for tool in $(DEBIAN_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  guard=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  [ $$guard = 1 ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

## lint: ruff and mypy
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

## test: lint, start a real Kafka broker, run pytest, stop the broker
test: install debian-deps lint
	@bootstrap=$$($(BIN)/gatewatch dev kafka start --state-dir $(KAFKA_STATE)) || exit 1; \
	echo "Apache Kafka broker started at $$bootstrap"; \
	GATEWATCH_KAFKA=$$bootstrap $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	$(BIN)/gatewatch dev kafka stop --state-dir $(KAFKA_STATE); exit $$rc

## bench: every benchmark in bench/ (tables on stdout, JSON in bench/results/)
bench: install debian-deps
	@rc=0; for script in $(BENCHES); do $(PY) $$script || rc=1; done; \
	bootstrap=$$($(BIN)/gatewatch dev kafka start --state-dir $(KAFKA_STATE)) || exit 1; \
	for script in $(KAFKA_BENCHES); do GATEWATCH_KAFKA=$$bootstrap $(PY) $$script || rc=1; done; \
	$(BIN)/gatewatch dev kafka stop --state-dir $(KAFKA_STATE); exit $$rc

## eval: detectors' precision/recall/delay report (bench/results/detectors-eval.md/.json); the public
## benchmark (UCR series 135) is read from the aeon wheel, fetched with pip (never committed)
eval: install
	@mkdir -p .gatewatch/datasets; ls .gatewatch/datasets/aeon-*.whl >/dev/null 2>&1 || \
	  $(PY) -m pip download -q --no-deps aeon==1.6.0 -d .gatewatch/datasets || echo "aeon wheel unavailable: public benchmark skipped"
	$(BIN)/gatewatch detectors eval --data-dir .gatewatch/eval --datasets .gatewatch/datasets -o bench/results/detectors-eval

## reliability: fault, overload, fuzz and security cases at the long scale; a table, JSON, non-zero on any loss
reliability: install
	@bootstrap=$$($(BIN)/gatewatch dev kafka start --state-dir $(KAFKA_STATE)) || exit 1; \
	GATEWATCH_KAFKA=$$bootstrap GATEWATCH_RELIABILITY_LONG=1 $(PY) bench/reliability.py $(RELIABILITY_ARGS); rc=$$?; \
	$(BIN)/gatewatch dev kafka stop --state-dir $(KAFKA_STATE); exit $$rc

clean:
	rm -rf .gatewatch bench/results test-artifacts
