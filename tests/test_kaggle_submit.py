"""kaggle_submit: build the bundle, run the built notebook against a fake /kaggle/input tree."""
import json
from pathlib import Path

import pytest

from cutlib import nbbuild
from cutlib.config import load_yaml
from cutlib.data import make_demo_data
from cutlib.generate import validate_zip
from kaggle_submit.build import KERNEL_REQUIRED, build, build_notebook, package_sources

ROOT = Path(__file__).resolve().parent.parent


def test_bundle_carries_the_current_suite_and_sources(tmp_path):
    nb = build_notebook("train-and-submit", {})
    text = "".join("".join(c["source"]) for c in nb["cells"])
    for rel, src in package_sources().items():  # the current cutlib, byte for byte
        assert json.dumps(src) in text, rel
    suite_cells = [c for make in nbbuild.NOTEBOOKS.values() for c in make()["cells"]
                   if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
    for c in suite_cells:  # every suite cell is there (train cells indented under the mode guard)
        body = "".join(c["source"])
        assert body in text or "\n".join("    " + l if l else l for l in body.splitlines()) in text, body[:60]


def test_metadata_has_what_the_kaggle_cli_requires(tmp_path):
    r = build(tmp_path / "kb", "tester", params_file=ROOT / "params/kaggle.yaml")
    meta = json.loads((tmp_path / "kb/notebook/kernel-metadata.json").read_text())
    assert all(meta.get(k) for k in KERNEL_REQUIRED)
    assert (tmp_path / "kb/notebook" / meta["code_file"]).is_file()
    assert meta["kernel_type"] == "notebook" and meta["language"] == "python"
    assert meta["competition_sources"] == ["gan-getting-started"]
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    ds = json.loads((tmp_path / "kb/datasets/fid-weights/dataset-metadata.json").read_text())
    assert ds["id"] in meta["dataset_sources"] and ds["id"].startswith("tester/")
    assert (tmp_path / "kb/datasets/fid-weights/default_1.pt").stat().st_size > 80e6
    assert r["push"][-1].startswith("kaggle kernels push -p ")


def _run_on_fake_kaggle(tmp_path, bundle, extra):
    import papermill

    kaggle_input = make_demo_data(tmp_path / "input" / "gan-getting-started", n_photos=24, n_paintings=8, size=64)
    working = tmp_path / "working"
    smoke = {k: v for k, v in load_yaml(ROOT / "params/smoke.yaml").items() if k != "data"}
    params = {**smoke, "data": str(kaggle_input), "out_dir": str(working / "run"), "run_dir": str(working / "run"),
              "zip_path": str(working / "images.zip"), "time_budget_hours": 0.0,
              "fid_weights": str(bundle / "datasets/fid-weights/default_1.pt"), **extra}
    nb = next((bundle / "notebook").glob("*.ipynb"))
    executed = papermill.execute_notebook(str(nb), str(tmp_path / "executed.ipynb"), parameters=params,
                                          kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "cutlib from /tmp/cutlib_src/cutlib/__init__.py" in text  # the carried copy, not the repo
    assert validate_zip(working / "images.zip", 20, 30)["count"] == 24  # 24 photos, window 20..30
    return working, text


@pytest.mark.slow
def test_train_and_submit_notebook_runs_on_a_fake_kaggle_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    bundle = Path(build(tmp_path / "kb", "tester", params_file=ROOT / "params/kaggle.yaml")["out"])
    working, text = _run_on_fake_kaggle(tmp_path, bundle, {})
    assert (working / "run/ckpt/latest.pt").is_file() and "OVERALL: PASS" in text


@pytest.mark.slow
def test_submit_from_checkpoint_notebook_generates_without_training(tmp_path, tiny_cfg, monkeypatch):
    from cutlib.train import train

    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_cfg(steps=2, sample_every=0)
    train(cfg, progress=False)
    bundle = Path(build(tmp_path / "kb", "tester", "submit-from-checkpoint", ROOT / "params/kaggle.yaml",
                        Path(cfg.out_dir) / "ckpt/latest.pt")["out"])
    assert (bundle / "datasets/checkpoint/model.pt").stat().st_size < (Path(cfg.out_dir) / "ckpt/latest.pt").stat().st_size
    working, _ = _run_on_fake_kaggle(tmp_path, bundle, {"checkpoint": str(bundle / "datasets/checkpoint/model.pt")})
    assert not (working / "run/ckpt").exists()  # no training happened
