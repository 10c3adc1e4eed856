# framepack-trt: the targets CI and users run. Every target creates the virtual environment
# first if it is missing (.venv, or VENV=...). On a GPU machine, install the TensorRT extra
# with `make install EXTRAS=dev,tensorrt-rtx` (or tensorrt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build on this project's CI machines; set TORCH_SPEC to change it.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PROFILE ?= tiny
# Threads per process in the test suite: its two workers and the build, check and verify
# processes they start each running torch's default (one thread per core) oversubscribed a
# 2-core machine (suite 10 min 32 s against 7 min 56 s with 1, docs/benchmarks.md).
TEST_THREADS ?= 1
ARGS ?=

# FramePack's own environment: its requirements.txt's pins (diffusers 0.33.1, transformers
# 4.46.2, ...), then framepack-trt with its dependencies resolved against them.
PINNED_VENV ?= .venv-framepack
PBIN := $(PINNED_VENV)/bin
FRAMEPACK_REQUIREMENTS ?= .ci/framepack-requirements.txt
# What `test-pinned` runs there: the tests of what differs between the two version sets (the
# transformer class, the export module, the from_pretrained dtype keyword, the pins kept) and
# the CLI's components. PINNED_TESTS="tests/test_e2e.py tests/test_framepack_worker.py ..."
# adds the tiny profile's build/verify and FramePack's own worker (minutes more, README).
PINNED_TESTS ?= tests/test_versions.py tests/test_framepack_transformer.py \
	tests/components/test_transformer_export.py tests/test_sources.py \
	tests/test_cli.py::test_components_lists_registry \
	tests/test_framepack_worker.py::test_keep_output_capture_gives_the_installers_class_its_hidden_states

.PHONY: install install-pinned demo test test-newest test-pinned gpu-test lint build list verify \
	purge doctor clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed ## create .venv and install framepack-trt with its test tools

$(PBIN)/.installed: pyproject.toml $(FRAMEPACK_REQUIREMENTS)
	test -x $(PBIN)/python || $(PYTHON) -m venv $(PINNED_VENV)
	$(PBIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(PBIN)/python -m pip install -q -r $(FRAMEPACK_REQUIREMENTS)
	$(PBIN)/python -m pip install -q -e ".[dev]"
	touch $@

install-pinned: $(PBIN)/.installed ## FramePack's pinned environment (.venv-framepack) + framepack-trt

demo: install ## build the tiny profile (CPU, AOTInductor), list it, verify it against PyTorch
	$(BIN)/framepack-trt build --profile tiny
	$(BIN)/framepack-trt list
	$(BIN)/framepack-trt verify

test: test-newest test-pinned ## both version sets: the suite on the newest, a subset on FramePack's pins

test-newest: install ## the test suite (CPU only; GPU tests skip themselves), two workers
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n 2

test-pinned: install-pinned ## PINNED_TESTS in FramePack's pinned environment, two workers
	FRAMEPACK_REQUIREMENTS=$(FRAMEPACK_REQUIREMENTS) OMP_NUM_THREADS=$(TEST_THREADS) \
		$(PBIN)/python -m pytest -q -n 2 $(PINNED_TESTS)

gpu-test: install ## the GPU tests (need CUDA; TensorRT ones need torch_tensorrt)
	$(BIN)/python -m pytest -q -m gpu tests/gpu

lint: install
	$(BIN)/python -m ruff check framepack_trt tests scripts

build: install ## build PROFILE (default tiny); extra options in ARGS
	$(BIN)/framepack-trt build --profile $(PROFILE) $(ARGS)

list: install
	$(BIN)/framepack-trt list $(ARGS)

verify: install
	$(BIN)/framepack-trt verify $(ARGS)

purge: install ## e.g. make purge ARGS="--all --yes"
	$(BIN)/framepack-trt purge $(ARGS)

doctor: install
	$(BIN)/framepack-trt doctor

clean: ## remove the demo cache (Cache/) and the virtual environments
	rm -rf Cache $(VENV) $(PINNED_VENV)
