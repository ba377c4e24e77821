# Everything a fresh clone needs: `make demo` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck pytest image-test docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[demo]'
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[demo,test]'
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/replayer demo

lint: $(VENV)/.test
	$(BIN)/ruff check replayer tests $(wildcard bench)
	$(BIN)/ruff format --check replayer tests $(wildcard bench)

typecheck: $(VENV)/.test
	$(BIN)/mypy

# Two workers (the machines have two cores), each test file on one worker: its emulators and
# fixtures start once. `$(BIN)/pytest tests/test_x.py` runs one file alone.
pytest: $(VENV)/.test
	$(BIN)/pytest -n 2 --dist loadfile

# Lint, types, and pytest without the image tests (marker `image`): no system package, no root,
# nothing left behind; the docs' strict build and their ```sh blocks run in tests/test_docs.py.
test: lint typecheck pytest

# The container image built with buildah and run (root, buildah and mmdebstrap installed: .ci/run
# installs them on CI); removes what it built at the end.
image-test: $(VENV)/.test
	@command -v buildah > /dev/null || { echo "make image-test: needs buildah (apt-get install buildah mmdebstrap)" >&2; exit 2; }
	$(BIN)/pytest -m image tests/test_image.py

# The documentation site (MkDocs + Material) into site/; `$(BIN)/mkdocs serve` to read it live.
docs: $(VENV)/.test
	$(BIN)/mkdocs build --strict --site-dir site

# Slow and noisy: not part of `make test` (a smoke run with tiny sizes is). Every shape, #15's and
# #26's backlog (the slow hand-written baseline once per shape); then the soak and the Lambda model.
bench: $(VENV)/.test
	$(BIN)/python -m bench.run --shapes all --baseline-once --write bench/RESULTS.md
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.lambda_model

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis site dist build

# The Lambda deployment zip that deploy/template.yaml's CodeUri points at, for one Lambda runtime:
# `make package [PLATFORM=manylinux2014_x86_64|manylinux2014_aarch64] [PYTHON=3.12]` (PYTHON is the
# runtime's version here; the template's Architecture parameter must match PLATFORM). Runtime
# dependencies only, pinned by constraints.txt, binary wheels for that platform; prints the size.
.PHONY: package
PLATFORM ?= manylinux2014_x86_64
LAMBDA_PYTHON = $(if $(filter 3.%,$(PYTHON)),$(PYTHON),3.12)
LAMBDA_ZIP ?= deploy/build/replayer-lambda.zip
PACKAGER = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

package:
	$(PACKAGER) deploy/package.py --platform $(PLATFORM) --python-version $(LAMBDA_PYTHON) --output $(LAMBDA_ZIP)

# The container image: `make image [IMAGE=replayer:TAG] [PYTHON_IMAGE=BASE]` with docker where a daemon
# runs, else buildah (root; the base made from Debian's packages when the official one is out of reach).
.PHONY: image
image:
	IMAGE="$(IMAGE)" PYTHON_IMAGE="$(PYTHON_IMAGE)" bash deploy/image/build.sh
