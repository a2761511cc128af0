# The two commands a newcomer needs are `make demo` and `make test`; the rest are for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck neo4j-up neo4j-down redis-up redis-down services-up services-down \
        bench bench-http assets clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the project and its dev extras

demo: install  ## seed a sample network on the embedded store, analyse it, serve the API and pages
	scripts/demo.sh

test: install  ## install test needs, start Neo4j and Redis, lint, run every test, stop the services
	scripts/test.sh $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

typecheck: install
	$(BIN)/mypy graph engine api bench tests

neo4j-up:  ## start Neo4j 5.26 (embedded, Bolt on 127.0.0.1:$${NEO4J_BOLT_PORT:-7687}, auth off)
	scripts/neo4j-up.sh

neo4j-down:
	scripts/neo4j-down.sh

redis-up:  ## start Redis on 127.0.0.1:$${REDIS_PORT:-6390}
	scripts/redis-up.sh

redis-down:
	scripts/redis-down.sh

services-up: neo4j-up redis-up
services-down: neo4j-down redis-down

bench: install  ## run the benchmarks (needs services-up for the Neo4j and Redis figures)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.targeting
	$(BIN)/python -m bench.analysis_scale
	$(BIN)/python -m bench.kit_store

bench-http: install  ## HTTP load on loopback: /r/{code} and a kit beside a bare FastAPI app (installs wrk if missing)
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "bench-http: installing the Debian package wrk"; \
	  if [ "$$(id -u)" != 0 ]; then echo "bench-http: need root (or sudo) for: apt-get install wrk" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	}
	$(BIN)/python -m bench.http $(ARGS)

assets:  ## rebuild the vendored front-end files from the npm registry (pinned in frontend/package-lock.json)
	cd frontend && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
