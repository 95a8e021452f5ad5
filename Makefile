# Every target creates the virtualenv and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PROTOS := $(wildcard protos/agenttasks/v1/*.proto)
# Flags for `make run`, e.g. make run ARGS="--port 50052".
ARGS ?=
# pip stays quiet (no version check, no build backend's warnings), so the Team API Key
# that `make run` prints is not lost under a wall of install output.
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore \
  $(BIN)/python -m pip install -q --no-warn-script-location

.PHONY: venv run test test-fast proto proto-check lint bench bench-scale clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[server,dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: venv
	$(BIN)/agenttasks serve $(ARGS)

test: venv
	$(BIN)/pytest -q

# The quick loop: leaves out the suites marked slow (CI runs them all).
test-fast: venv
	$(BIN)/pytest -q -m 'not slow'

# The descriptor set keeps the proto comments, so reflection (grpcurl describe) shows them.
DESCRIPTORS := agenttasks/v1/descriptor_set.binpb

proto: venv
	$(BIN)/python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis \
	  --python_out=generated --pyi_out=generated --grpc_python_out=generated $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis --include_source_info \
	  --descriptor_set_out=generated/$(DESCRIPTORS) $(PROTOS)

# Fails when the committed stubs differ from what the protos generate.
proto-check: venv
	rm -rf build/proto-check && mkdir -p build/proto-check
	$(BIN)/python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis \
	  --python_out=build/proto-check --pyi_out=build/proto-check \
	  --grpc_python_out=build/proto-check $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis --include_source_info \
	  --descriptor_set_out=build/proto-check/$(DESCRIPTORS) $(PROTOS)
	diff -r -x __init__.py -x __pycache__ -x py.typed build/proto-check/agenttasks generated/agenttasks \
	  || (echo "generated/ is stale: run 'make proto' and commit it" && exit 1)

lint: venv
	$(BIN)/buf lint
	$(BIN)/ruff check service client tests examples
	$(BIN)/ruff format --check service client tests examples
	$(BIN)/mypy service client

bench: venv
	$(BIN)/python -m tests.bench $(ARGS)

# Latency on 1,000 and 1,000,000 tasks, and serve --workers 1 against 2 (PostgreSQL).
bench-scale: venv
	$(BIN)/python -m tests.bench_scale $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
