# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: its CPU wheel is on disk; an open range would pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

# onnxruntime-node runs the exported serving graph with no Python in one test (skipped without node).
NODE_ORT := node_modules/onnxruntime-node/package.json
$(NODE_ORT):
	-command -v npm >/dev/null && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save --no-audit --no-fund \
		--ignore-scripts onnxruntime-node@1 >/dev/null || echo "onnxruntime-node not installed: that test skips"

# Headless Chromium renders every HTML report in one test (skipped without it); CI runs as root.
chromium:
	-@command -v chromium >/dev/null || (apt-get install -y -qq chromium >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1) || \
		echo "chromium not installed: the report rendering test skips"

test: $(STAMP) $(NODE_ORT) chromium
	$(BIN)/python -m ruff check src tests bench scripts
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/prepare.py

clean:
	rm -rf $(VENV) demo-out node_modules
