# The commands a user types. `make install` builds .venv from nothing; the rest use it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# See ../shared/FACTS.md: glibc's default malloc unmaps big tensors every step on CPU.
export GLIBC_TUNABLES := glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.PHONY: install lint test test-fast demo bench clean

install: $(VENV)/.installed $(VENV)/pywb/.installed

# torch goes in alone and first, pinned: otherwise a dependency could pull a multi-GB CUDA build.
# DS_BUILD_OPS=0: DeepSpeed compiles its ops when first used, not at install; except the CPU comm op that every
# CPU run needs, built here once (training/ops.py) into torch's extensions cache.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[test]'
	# The lowest aiohttp pyproject.toml allows, apart: tests/pipeline/test_ssrf.py runs the SSRF guard's cases with it.
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/aiohttp-floor \
		"aiohttp==$$(sed -n 's/.*"aiohttp>=\([0-9.]*\).*/\1/p' pyproject.toml)"
	$(PY) -m training.ops
	touch $@

# pywb, the local Wayback-compatible archive of the tests and the demo, is a server of its own in a virtual
# environment of its own: pywb 2.10 pins werkzeug==3.1.7 and redis==2.10.6 and brings brotlipy, whose `brotli`
# module would shadow the one the crawler decodes with (jobs/fixtures/archives.py).
$(VENV)/pywb/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(VENV)/pywb
	$(VENV)/pywb/bin/python -m pip install -q -U pip
	$(VENV)/pywb/bin/python -m pip install -q pywb==2.10.0
	touch $@

# The whole tree: library, tests, bench (rules in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest tests

test-fast: install lint
	$(PY) -m pytest tests -m 'not slow'

demo: install
	$(PY) -m jobs.demo $(DEMO_ARGS)

bench: install
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) build *.egg-info
