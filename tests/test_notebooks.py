"""The notebook suite: stored as built, parameters mirror TrainConfig, and real papermill runs."""
import dataclasses
import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from cutlib.config import TrainConfig
from cutlib.nbbuild import GENERATE_PARAMS, NOTEBOOK_DIR, NOTEBOOKS, TRAIN_LAUNCH_PARAMS, render

ROOT = Path(__file__).resolve().parent.parent


def params_of(name):
    import papermill

    return papermill.inspect_notebook(str(NOTEBOOK_DIR / name))


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_stored_notebooks_are_current_and_without_outputs(name):
    stored = (NOTEBOOK_DIR / name).read_text()
    assert stored == render(NOTEBOOKS[name]()), f"run `python -m cutlib.nbbuild` to rebuild {name}"
    # byte for byte what Jupyter writes when it saves the notebook unedited (no diff from opening it)
    assert stored == nbformat.writes(nbformat.reads(stored, as_version=4)) + "\n"
    nb = json.loads(stored)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1


def test_parameters_mirror_config_fields_with_help():
    defaults = TrainConfig().to_dict()
    train = params_of("02_train.ipynb")
    launch = {p[0] for p in TRAIN_LAUNCH_PARAMS}
    assert set(train) == {f.name for f in dataclasses.fields(TrainConfig)} | launch
    assert not launch & set(defaults)
    for nb in ("01_sanity.ipynb", "02_train.ipynb"):
        for name, p in params_of(nb).items():
            if name in launch:
                continue
            assert name in defaults, (nb, name)
            assert eval(p["default"]) == (list(defaults[name]) if isinstance(defaults[name], tuple)
                                          else defaults[name]), (nb, name)
            assert p["help"], (nb, name)
    gen = params_of("03_generate_zip.ipynb")
    assert list(gen) == [p[0] for p in GENERATE_PARAMS] and all(p["help"] for p in gen.values())
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name in set(gen) & set(types):  # shared names mean the same thing and have the same type
        assert gen[name]["inferred_type_name"] == types[name], name


@pytest.fixture
def suite_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTLIB_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    return tmp_path


@pytest.mark.slow
@pytest.mark.long  # a notebook run end to end: a minute or more; make test-long
def test_suite_runs_end_to_end_on_demo_data(suite_env):
    from cutlib.checkpoint import load_checkpoint
    from cutlib.config import DEMO_OUT, load_yaml
    from cutlib.generate import resolve_checkpoint, validate_zip
    from cutlib.suite import run_suite

    out = suite_env / DEMO_OUT  # where `make demo` writes, under suite_env instead of the project
    run_suite(load_yaml(ROOT / "params/smoke.yaml"), out)
    for name in NOTEBOOKS:
        assert (out / "executed" / name).is_file()
    ckpt = load_checkpoint(out / "run/ckpt/latest.pt")
    assert ckpt["step"] == 4 and ckpt["ema_G"]["shadow"]
    assert (out / "run/ckpt/best.pt").is_file()
    # 03 opened after `make demo`, run_dir left at its default (relative to where make demo ran), finds
    # the suite's run; and so does 03 after 02, both at their defaults
    run_dir = {p[0]: p[2] for p in GENERATE_PARAMS}["run_dir"]
    assert resolve_checkpoint("auto", suite_env / run_dir) == out / "run/ckpt/best.pt"
    assert TrainConfig().out_dir == run_dir
    assert validate_zip(out / "images.zip", 30, 30)["count"] == 30  # 200 demo photos, max_count 30
    with zipfile.ZipFile(out / "images.zip") as zf:
        assert Image.open(zf.open(zf.namelist()[0])).size == (256, 256)
    assert sorted(p.name for p in (out / "run/samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    executed = json.loads((out / "executed/02_train.ipynb").read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the loss curves and the MiFID curve
    stderr = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])
                     if o.get("name") == "stderr")
    assert "train: ended at step 4/4 (100%)" in stderr  # plain lines, not widgets, though make test has ipywidgets
    sanity = json.loads((out / "executed/01_sanity.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in sanity["cells"] for o in c.get("outputs", []))
    assert "OVERALL: PASS" in text and "ETA" in text


@pytest.mark.slow
@pytest.mark.long  # a notebook run end to end: a minute or more; make test-long
def test_papermill_run_of_02_keeps_progress_to_a_line_per_interval(suite_env, demo_root, monkeypatch):
    """`papermill 02_train.ipynb -p steps 50000` stored one output per bar redraw (make demo's 200 steps: ~200
    outputs, 262 KB). Under papermill itself (no cutlib.suite, no CUTLIB_PROGRESS) progress is a line per
    CUTLIB_PROGRESS_EVERY_S, so the executed notebook's outputs depend on the run's length, not on its steps."""
    import papermill

    monkeypatch.delenv("CUTLIB_PROGRESS", raising=False)
    every, steps = 1.5, 120  # a bar gave about one output per step (its 0.1 s redraws outpace a CPU step)
    monkeypatch.setenv("CUTLIB_PROGRESS_EVERY_S", str(every))  # the kernel papermill starts inherits it
    params = dict(data=str(demo_root), image_size=32, load_size=36, ngf=8, ndf=8, n_blocks=5, num_patches=16,
                  steps=steps, log_every=10, ckpt_every=steps, sample_every=0, num_workers=0,
                  out_dir=str(suite_env / "run"))
    out = suite_env / "02.ipynb"
    papermill.execute_notebook(str(NOTEBOOK_DIR / "02_train.ipynb"), str(out), parameters=params,
                               kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    cell = next(c for c in nb["cells"] if "train(cfg)" in "".join(c["source"]))
    seconds = cell["metadata"]["papermill"]["duration"]
    streams = [o for o in cell["outputs"] if o["output_type"] == "stream"]
    text = "".join("".join(o["text"]) for o in streams)
    lines = [line for line in text.splitlines() if line.startswith("train:")]
    assert "\r" not in text and "it/s" not in text, text[:500]  # no bar redraws
    assert lines[-1].startswith(f"train: ended at step {steps}/{steps} (100%)")
    # the opening and closing lines and one per interval; ipykernel may split or join them into messages
    assert len(lines) <= 2 + seconds / every and len(streams) <= len(lines), (seconds, len(streams), lines)
    assert len(text) < 160 * len(lines)


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"data": "/no/such/folder"}, "photo folder (photo_dir) /no/such/folder/photo_jpg does not exist"),
    ({"steps": -5}, "steps=-5: must be >= 1"),
])
def test_notebook_failures_are_one_readable_line(suite_env, params, message):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOK_DIR / "02_train.ipynb"), str(suite_env / "o.ipynb"),
                                   parameters={"out_dir": str(suite_env / "run"), **params},
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "NotebookError" and message in err.value.evalue
    # the whole traceback Jupyter shows is the one line (NotebookError._render_traceback_), no frames
    assert len(err.value.traceback) == 1 and message in err.value.traceback[0], err.value.traceback


def test_suite_rejects_unknown_parameters(suite_env):
    from cutlib.config import ConfigError
    from cutlib.suite import run_suite

    with pytest.raises(ConfigError, match="stepz"):
        run_suite({"stepz": 3}, suite_env / "out")
