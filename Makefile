# The two commands a fresh clone needs: `make demo` and `make test`. Both install into .venv first.
PY := .venv/bin/python
CONFIG ?= configs/demo.yaml
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast check bench clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m game.play --config $(CONFIG)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

check: install
	$(PY) -m ruff check core data score generate train game toy tests bench
	$(PY) -m ruff format --check core data score generate train game toy tests bench
	$(PY) -m mypy

clean:
	rm -rf runs .sparring
