# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast bench bench-realdata serve clean help

help:
	@echo "make demo   set up .venv and run the whole loop on the embedded synthetic shop"
	@echo "make test   set up .venv and run the test suite"
	@echo "make bench  run the speed benchmarks (ratios against same-run baselines)"
	@echo "make bench-realdata  every task on the real public files in ../shared/realdata, against the references"
	@echo "make serve  serve the champion models on 127.0.0.1:3000"

# --compile-bytecode: uv leaves .pyc to the first import, and where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines) they are never written, so every process recompiled TensorFlow and Keras: 21.6 s to import them, 9.0 s
# with bytecode (bench/bench_imports.py). Every DVC stage, flow and `bentoml serve` is such a process.
$(STAMP): requirements.lock pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	$(PY) -m shopsight.prefect_setup  # migrate Prefect's local database now, not inside a flow's 20 s server start
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.training

# Two pytest-xdist workers: the tests on the shared tiny project in one, the other files spread over both
# (tests/conftest.py groups them); TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

bench: $(STAMP)
	for b in bench/bench_*.py; do [ "$$b" = bench/bench_realdata.py ] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

bench-realdata: $(STAMP)  # quality on the real files in ../shared/realdata (tens of minutes on 2 cores)
	nice -n 10 $(PY) bench/bench_realdata.py

serve: $(STAMP)
	$(VENV)/bin/shopsight serve

clean:
	rm -rf data artifacts plots monitoring/reports .dvc/tmp  # metrics/ holds the committed results of record
