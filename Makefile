# `make demo` and `make test` set everything up on a fresh machine: they create .venv
# and install phf (with the CPU build of torch that these machines have on disk) when
# it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TASK ?= pep8
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install clean

$(BIN)/phf: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU wheel of torch when it is on disk; otherwise pip resolves torch==2.13.0 itself
	if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet /opt/wheels/torch-2.13.0+cpu-*.whl; fi
	$(BIN)/pip install --quiet -e ".[test,ray]"
	touch $(BIN)/phf

install: $(BIN)/phf

# the prose tasks' offline corpora (see phf.data.prose_corpora)
CORPUS_toxicity := fortunes
CORPUS_pii := debian-docs
CORPUS_toxicity+pii := toxicity+pii

demo: $(BIN)/phf
ifneq ($(TASK),pep8)
	test -s runs/corpora/$(CORPUS_$(TASK)).jsonl || \
		$(BIN)/python -m phf.data.prose_corpora $(CORPUS_$(TASK)) runs/corpora/$(CORPUS_$(TASK)).jsonl --fetch
endif
	$(BIN)/phf demo --task $(TASK) --out runs/demo$(if $(filter-out pep8,$(TASK)),-$(TASK))

test: $(BIN)/phf
	$(BIN)/python -m pytest tests -q

bench: $(BIN)/phf
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache
