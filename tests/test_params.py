"""Every params file loads through every entry point it is meant for: `cutlib train -f`, papermill's
`-f` into 02 and 03, and `kaggle_submit build --params`; a key none of them knows is an error that names it."""
from pathlib import Path

import pytest
import yaml
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from cutlib.config import ConfigError, TrainConfig, load_yaml
from cutlib.nbbuild import GENERATE_PARAMS, NOTEBOOK_DIR, NOTEBOOK_ONLY_KEYS
from cutlib.notebook import config_from
from cutlib.train import parse_cli
from kaggle_submit.build import load_params

PARAMS = sorted((Path(__file__).resolve().parent.parent / "params").glob("*.yaml"))


def papermill_parameters(notebook: str, params: dict) -> dict:
    """The names a papermill run with `-f` defines before the notebook's first own line runs: its
    parameters cell, then the cell papermill injects (the same function papermill calls)."""
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK_DIR / notebook)), params,
                               kernel_name="python3", language="python")
    ns: dict = {}
    for cell in nb.cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            exec(cell.source, ns)
    return ns


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_a_params_file_loads_in_cutlib_train_02_03_and_the_kaggle_build(path):
    params = load_yaml(path)
    train_keys = {k: v for k, v in params.items() if k not in NOTEBOOK_ONLY_KEYS}
    cfg = parse_cli(["-f", str(path)])  # cutlib train -f FILE
    assert cfg == TrainConfig.from_dict(train_keys)
    assert {k: getattr(cfg, k) for k in train_keys if k != "nce_layers"} == \
        {k: v for k, v in train_keys.items() if k != "nce_layers"}  # every training key arrives as written
    assert config_from(papermill_parameters("02_train.ipynb", params)) == cfg  # 02: the cell after its parameters
    generate = papermill_parameters("03_generate_zip.ipynb", params)
    assert {name: generate[name] for name, *_ in GENERATE_PARAMS if name in params} == \
        {name: params[name] for name, *_ in GENERATE_PARAMS if name in params}
    built = load_params(path, "t4x2")  # kaggle_submit build --params FILE (the T4 x2 notebook)
    assert {k: built[k] for k in params if k not in ("nproc", "amp")} == \
        {k: v for k, v in params.items() if k not in ("nproc", "amp")}


def test_a_key_no_entry_point_knows_is_named_by_train_and_the_kaggle_build(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"steps": 10, "lambda_ncee": 2.0, "nproc": 1, "zip_path": "x.zip"}))
    with pytest.raises(ConfigError, match="lambda_ncee"):
        parse_cli(["-f", str(bad)])
    with pytest.raises(SystemExit, match="lambda_ncee"):
        load_params(bad, "t4x2")
    # the notebook-only keys of the same file are not what either complains about
    bad.write_text(yaml.safe_dump({"steps": 10, "nproc": 1, "zip_path": "x.zip"}))
    assert parse_cli(["-f", str(bad)]).steps == 10
    with pytest.raises(ConfigError, match="nproc"):  # on the command line it is no training field
        parse_cli(["--nproc", "2"])
