# The two commands of the README: `make run` and `make test`. Everything they need is set up here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The browser tests drive Debian's Chromium (never a downloaded browser build); the interop
# tests run Debian's Prometheus against planoscope and check deploy/ with docker-compose (and
# deploy/scale-out/'s balancer with haproxy); the alerting tests send alerts to Debian's Alertmanager.
CHROMIUM   := /usr/bin/chromium
PROMETHEUS := /usr/bin/prometheus
COMPOSE    := /usr/bin/docker-compose
HAPROXY    := /usr/sbin/haproxy
ALERTMANAGER := /usr/bin/prometheus-alertmanager
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test lint setup bench screenshots clean

$(STAMP): pyproject.toml setup.py src/planoscope/ingest/_otlp.c  # the C decoder is built by the install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/planoscope demo

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

$(PROMETHEUS):
	@echo "Installing Debian's prometheus for the interop tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null

$(COMPOSE):
	@echo "Installing Debian's docker-compose to validate deploy/ (no Docker engine is needed)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker-compose >/dev/null

$(HAPROXY):
	@echo "Installing Debian's haproxy to validate deploy/scale-out/ (haproxy -c)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends haproxy >/dev/null

$(ALERTMANAGER):
	@echo "Installing Debian's prometheus-alertmanager for the alerting tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null

# What CI runs (.ci/run): the lint, then every test, on three workers (pytest-xdist; a file's
# tests on one of them). Three on two cores, as many tests wait rather than compute (scrape
# intervals, a forwarder's back-off, Prometheus's 80 s of traffic): 1,040 s with two, 856 s
# with three on a 2-core VM. One file alone: $(BIN)/python -m pytest tests/FILE.
test: lint $(CHROMIUM) $(PROMETHEUS) $(COMPOSE) $(HAPROXY) $(ALERTMANAGER)
	$(BIN)/python -m pytest -n 3 --dist loadfile

# ruff, configured in pyproject.toml: lint rules and the formatter's check, on the whole tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

# The README's pictures, docs/img/*.png, taken from the demo by Debian's Chromium (about a minute).
screenshots: $(STAMP) $(CHROMIUM)
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) build src/*.egg-info test-output
