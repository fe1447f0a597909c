# Two commands on a fresh machine:  `make demo` (main job on built-in demo data)  and  `make test`.
# `make lab`: the same install plus JupyterLab, then JupyterLab on this venv's kernel with notebooks/ open.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
DATA ?= demo

.PHONY: install demo lab test bench kaggle clean

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
	$(PY) -m pytest -q tests

kaggle: install
	$(PY) -m kaggle_submit build --mode $(or $(MODE),train-and-submit) $(if $(CKPT),--checkpoint $(CKPT)) --out build/kaggle

bench: install
	$(PY) bench/train_step.py --quick

clean:
	rm -rf runs build .pytest_cache notebooks/.ipynb_checkpoints
