# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INTEGRATIONS := integrations/langchain integrations/llama-index integrations/nemoguardrails integrations/litellm
PROJECT_FILES := pyproject.toml constraints-dev.txt $(wildcard integrations/*/pyproject.toml)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test demo lint docs bench clean

$(STAMP): $(PROJECT_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt -e '.[dev]' $(foreach d,$(INTEGRATIONS),$(if $(wildcard $(d)/pyproject.toml),-e $(d)))
	touch $(STAMP)

install: $(STAMP)

# The linters first: CI (.ci/run) runs `make test`, so it checks types and imports too.
test: lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/vlmguard demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# Editable installs hide the integrations from mypy's import search: name their folders.
	MYPYPATH=integrations/langchain:integrations/llama-index:integrations/nemoguardrails:integrations/litellm \
	  $(VENV)/bin/mypy -p langchain_vlmguard -p llama_index_vlmguard -p nemoguardrails_vlmguard -p litellm_vlmguard
	$(VENV)/bin/lint-imports --no-cache

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) perf/perf_core.py

clean:
	rm -rf $(VENV) site .pytest_cache
