"""Every GPU figure of bench/README.md in one command (one process, so one CUDA start-up), as JSON lines
on stdout and a markdown table at the end: the training step at batch 1/4/8 in bf16, fp16 and fp32, eager
and graph-replayed, with each discriminator and the lighter generators (g_block, widths), optionally
torch.compile, and generation of 7,038 images into a validated zip.

    python bench/gpu_all.py --data PHOTOS_ROOT [--compile-probe] [--quick]

--quick: CI/CPU-sized (64 px, tiny widths, 2 configurations), to keep the script from rotting.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
import generate as generate_bench  # noqa: E402
import train_step  # noqa: E402
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.hardware import native_bf16  # noqa: E402


def emit(rec: dict, sink: list) -> None:
    sink.append(rec)
    print(json.dumps(rec), flush=True)


def step_record(cfg: TrainConfig, device, reps: int, profile: bool, sink: list, label: str) -> dict | None:
    t0 = time.time()
    try:
        rec = train_step.measure(cfg, device, warmup=2, reps=reps, profile=profile)
    except Exception as e:  # noqa: BLE001 - one failing configuration must not cost the others
        rec = {"bench": "train_step", "error": f"{type(e).__name__}: {e}"[:600]}
    rec.update(label=label, wall_seconds=round(time.time() - t0, 1))
    emit(rec, sink)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec if "seconds_per_step" in rec else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo", help="Kaggle-layout folder (photo_jpg/) for the generation bench")
    ap.add_argument("--compile-probe", action="store_true", help="also time compile=true (about a minute to compile)")
    ap.add_argument("--gen-images", type=int, default=7038)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = 64 if a.quick else 256
    tiny = dict(ngf=8, ndf=8, num_patches=32) if a.quick else {}
    reps = 2 if a.quick else a.reps
    base = TrainConfig(image_size=size, load_size=size, device=device.type, **tiny)
    sink: list = []
    t_start = time.time()
    # On CPU fp32: whether bf16 autocast is fast there depends on the host, and these figures are about the GPU.
    amp0 = ("bf16" if native_bf16() else "fp16") if device.type == "cuda" else "off"
    graph = "on" if device.type == "cuda" else "auto"

    # Most telling first, so a time limit only cuts the tail: the batch-1 step (graph, eager), each
    # discriminator, the lighter generators, batch 8, generation, then the other batches and dtypes.
    runs = [("b1 graph", dict(cuda_graph=graph)), ("b1 eager", dict(cuda_graph="off")),
            ("b1 graph, patch+projected", dict(cuda_graph=graph, discriminator="patch+projected"))]
    if not a.quick:
        runs += [("b1 graph, projected", dict(cuda_graph=graph, discriminator="projected")),
                 ("b1 graph, ngf/ndf 32", dict(cuda_graph=graph, ngf=32, ndf=32)),
                 ("b1 graph, mobile", dict(cuda_graph=graph, g_block="mobile")),
                 ("b1 graph, mobile ngf/ndf 32", dict(cuda_graph=graph, g_block="mobile", ngf=32, ndf=32)),
                 ("b8 graph", dict(cuda_graph="on", batch_size=8)), ("b8 eager", dict(cuda_graph="off", batch_size=8))]
    for label, kw in runs:
        step_record(base.replace(amp=amp0, **kw), device, max(5, reps // kw.get("batch_size", 1)),
                    profile=device.type == "cuda" and label in ("b1 graph", "b8 graph"), sink=sink,
                    label=f"{label} {amp0}")

    gen_args = ["--quick"] if a.quick else ["--data", a.data, "--images", str(a.gen_images), "--batch", "64",
                                            "--workers", "8"]
    try:
        rec = generate_bench.main(gen_args)
    except Exception as e:  # noqa: BLE001
        rec = {"bench": "generate", "error": f"{type(e).__name__}: {e}"[:600]}
    rec["label"] = "generate 7038" if not a.quick else "generate quick"
    emit(rec, sink)

    if not a.quick:
        for batch in (1, 4, 8):
            for amp in ("fp16", "off") + ((amp0,) if batch == 4 else ()):
                for g in ("on", "off"):
                    step_record(base.replace(amp=amp, batch_size=batch, cuda_graph=g), device, max(5, reps // batch),
                                False, sink, f"b{batch} {'graph' if g == 'on' else 'eager'} {amp}")
        if a.compile_probe and device.type == "cuda":
            step_record(base.replace(amp=amp0, cuda_graph="on", compile=True), device, reps, True, sink,
                        f"b1 graph + compile {amp0}")

    emit({"bench": "gpu_all", "seconds": round(time.time() - t_start, 1)}, sink)
    print(table(sink), file=sys.stderr)


def table(sink: list) -> str:
    rows = ["| config | s/step | steps/s | images/s | fraction of peak | kernels/step | GPU busy | copies | peak mem MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sink:
        if r.get("bench") == "train_step" and "seconds_per_step" in r:
            rows.append(f"| {r['label']} | {r['seconds_per_step']} | {r['steps_per_s']} | {r['images_per_s']} | "
                        f"{r.get('fraction_of_peak', '')} | {r.get('kernels_per_step', '')} | "
                        f"{r.get('gpu_busy_share', '')} | {r.get('copy_share_of_kernel_time', '')} | "
                        f"{r.get('peak_memory_mb', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
