# Two commands on a fresh machine: `make run` and `make test` (see README.md).
# Every target creates/refreshes .venv only when pyproject.toml, setup.py or a C source changed
# (`pip install -e .` builds the optional compiled parts listed in setup.py; CBL_PURE=1 at run
# time forces the pure-Python path, see storage/fastpath.py).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= $(wildcard config.toml)
ARGS   ?=

.PHONY: run test lint typecheck pytest demo bench chaos clean venv dev

CSRC   := $(wildcard */*.c */*/*.c */*.pyx)

$(VENV)/.installed: pyproject.toml setup.py $(CSRC)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# the real promtool for tests/deploy (alert rules); .ci/promtool says how it gets it
$(BIN)/promtool: | $(VENV)/.installed
	.ci/promtool

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev $(BIN)/promtool

## run: set up .venv and start the daemon with the default config (records into ./data)
run: $(VENV)/.installed
	$(BIN)/python -m logger run $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

## test: set up .venv with dev extras, then lint, type-check and run the tests
test: lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev $(BIN)/promtool
	$(BIN)/python -m pytest $(ARGS)

## demo: local test venue (tools/simulate) + daemon for ~20 s into ./demo-data (never ./data), then `inspect ls`
demo: $(VENV)/.installed
	$(BIN)/python -m tools.demo_cli $(ARGS)

## bench: every benchmark in bench/, each printing ratios against a same-run baseline
bench: $(VENV)/.installed-dev
	@for b in bench/storage.py bench/routing.py bench/metrics_cost.py bench/loop_path.py bench/ws_client.py bench/simulator.py bench/ingest.py bench/compact.py bench/export.py bench/ship.py; do \
		if [ -f $$b ]; then echo "== $$b"; $(BIN)/python $$b || exit 1; fi; \
	done

## chaos: simulator + daemon for 3 minutes under seeded kill -9, disconnect storms, sequence
## gaps and a full tmpfs, then the no-silent-loss check (bench/chaos.py; ARGS="--seconds 600")
chaos: $(VENV)/.installed-dev
	$(BIN)/python bench/chaos.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info build
	find storage logger tools -name '*.so' -delete
