# `make demo` and `make test` work on a fresh clone: each creates .venv and installs if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# one pytest worker per logical CPU, at most 4; a module's tests stay on one worker (its
# module-scoped fixtures are built once). A crashed worker ends the run at once: pytest-xdist
# 3.8's loadscope scheduler can wait forever after replacing one. TEST_WORKERS=-n0 runs the
# tests in this process.
TEST_WORKERS ?= -n logical --maxprocesses=4 --dist loadscope --max-worker-restart=0

.PHONY: demo test test-multiprocess bench lint install clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.reproduce --preset=tiny --out=results/

# Every paper's 1-vs-2-process equality run is in tests/research/*/test_multiprocess.py; `make
# test` runs those of the shared loop, ankge and bifeat (the test suite's time budget), `make
# test-multiprocess` the other papers'.
test: $(STAMP)
	$(PY) -m pytest tests -m "not every_paper_multiprocess" $(TEST_WORKERS) $(PYTEST_ARGS)

test-multiprocess: $(STAMP)
	$(PY) -m pytest tests -m every_paper_multiprocess $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m experiments.bench.ops --out=bench_out/

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) results bench_out *.egg-info
