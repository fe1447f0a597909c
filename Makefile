# Two commands on a fresh machine:  `make demo` (main job on built-in demo data)  and  `make test`.
# `make lab`: the same install plus JupyterLab, then JupyterLab on this venv's kernel with notebooks/ open.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
DATA ?= demo

# The oldest torch requirements.txt allows (its `torch>=X.Y.Z` line), tested in a venv of its own.
TORCH_FLOOR := $(shell sed -n 's/^torch>=\([0-9][0-9.]*\).*/\1/p' requirements.txt)
TORCHVISION_FLOOR := $(shell sed -n 's/^torchvision>=\([0-9][0-9.]*\).*/\1/p' requirements.txt)
FLOOR_VENV ?= .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python

.PHONY: install install-floor demo lab test test-long test-floor bench kaggle clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# JupyterLab and ipywidgets (requirements-lab.txt), then the browser test's driver (requirements-test.txt)
$(VENV)/.installed-lab: $(VENV)/.installed requirements-lab.txt
	$(PY) -m pip install -q -r requirements-lab.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-lab requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

demo: install
	$(PY) -m cutlib.suite -f params/demo.yaml --out $(OUT) --data $(DATA)

lab: $(VENV)/.installed-lab
	$(PY) -m cutlib.lab $(LAB_ARGS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q --durations=25 -m "not long" tests

# The long end-to-end checks (marked `long`), kept out of the edit-and-test loop; CI runs them right
# after `make test`: every benchmark once at its --quick size so none can rot (tests/test_bench.py), the
# README's terminal commands verbatim on the full demo data, torch.compile on the CPU, the notebook suite
# under papermill and the Kaggle bundle's notebooks. About fifteen minutes on 2 cores.
test-long: $(VENV)/.installed-test
	$(PY) -m pytest -q --durations=25 -m long tests

# The tests whose outcome depends on torch, on the torch floor (CI runs this after `make test`): the
# training step under every AMP mode, checkpoints, nets, the TorchScript Inception, generation, DDP on
# gloo, and the Kaggle T4 x2 notebook (papermill + torchrun + fp16). Left to `make test` alone: the
# papermill suite (the Kaggle notebook runs the same cells), the benchmarks, the other slow tests, the
# heavy metric tests beyond one Inception check (the Kaggle notebook also evaluates), PIL-only image
# tests, and the two wall-clock budget tests (they measure the machine's load, not torch).
FLOOR_TESTS ?= -m "not slow" tests --ignore=tests/test_notebooks.py --ignore=tests/test_bench.py \
	--deselect tests/test_metrics.py::test_in_training_evaluation_keeps_best \
	--deselect tests/test_metrics.py::test_evaluate_folder_or_zip_with_content_cache \
	--deselect tests/test_metrics.py::test_fid_halves_of_one_set_far_below_two_different_sets \
	--deselect tests/test_reliability.py::test_every_kind_of_odd_image_is_decoded_or_skipped_by_name \
	--deselect tests/test_reliability.py::test_training_on_odd_images_reports_the_skipped_count \
	--deselect tests/test_reliability.py::test_time_budget_holds_when_single_steps_are_slow \
	--deselect tests/test_train.py::test_time_budget_stops_cleanly_with_a_checkpoint
FLOOR_SLOW_TESTS ?= tests/test_ddp.py tests/test_kaggle_submit.py::test_t4x2_notebook_trains_on_two_ranks_in_fp16_then_generates

# PyPI's Linux torch wheels are CUDA builds: about 2.8 GB of downloads the first time, a 5.7 GB venv.
install-floor: $(FLOOR_VENV)/.installed

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_PY) -c "import torch; v = torch.__version__.split('+')[0]; assert v == '$(TORCH_FLOOR)', v"
	$(FLOOR_PY) -c "import torchvision as t; v = t.__version__.split('+')[0]; assert v == '$(TORCHVISION_FLOOR)', v"
	$(FLOOR_PY) -m pytest -q $(FLOOR_TESTS)
	$(FLOOR_PY) -m pytest -q $(FLOOR_SLOW_TESTS)

$(FLOOR_VENV)/.installed: requirements.txt
	test -n "$(TORCH_FLOOR)" || { echo "requirements.txt: no torch>=X.Y.Z line"; exit 1; }
	test -x $(FLOOR_PY) || python3 -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install -q "torch==$(TORCH_FLOOR)" "torchvision==$(TORCHVISION_FLOOR)" -r requirements.txt
	$(FLOOR_PY) -m pip install -q --no-deps -e .
	$(FLOOR_PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

kaggle: install
	$(PY) -m kaggle_submit build --mode $(or $(MODE),train-and-submit) $(if $(CKPT),--checkpoint $(CKPT)) \
		--accelerator $(or $(ACCELERATOR),t4x2) --out build/kaggle

bench: install
	$(PY) bench/train_step.py --quick

clean:
	rm -rf runs build .pytest_cache notebooks/.ipynb_checkpoints
