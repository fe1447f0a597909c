"""Every GPU figure of bench/README.md in one command (one process, so one CUDA start-up), as JSON lines
on stdout and a markdown table at the end: the training step at batch 1/4/8 in bf16, fp16 and fp32,
eager and graph-replayed (after a probe of channels_last vs NCHW, and of torch.compile), the official CUT
step beside it, and generation of 7,038 images into a validated zip.

    python bench/gpu_all.py --data PHOTOS_ROOT [--official PATH] [--compile-probe] [--quick]

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
    ap.add_argument("--official", default="", metavar="PATH")
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

    # Most telling first, so a time limit only cuts the tail: the batch-1 step in bf16 (eager, graph, in
    # both layouts), the official step, batch 8, the other dtypes, generation, then the rest.
    # On CPU fp32: whether bf16 autocast is fast there depends on the host (AMX or not: 0.5 s vs 146 s for
    # one 128 px step on the two CPU machines measured), and these figures are about the GPU.
    amp0 = ("bf16" if native_bf16() else "fp16") if device.type == "cuda" else "off"
    graph_on = "on" if device.type == "cuda" else "auto"
    timed = {}
    probes = [("eager, channels_last", dict(cuda_graph="off", channels_last=True)),
              ("graph, channels_last", dict(cuda_graph=graph_on, channels_last=True)),
              ("graph, NCHW", dict(cuda_graph=graph_on, channels_last=False))]
    for label, kw in probes[:2] if a.quick else probes:
        rec = step_record(base.replace(amp=amp0, **kw), device, reps, profile=device.type == "cuda", sink=sink,
                          label=f"b1 {amp0} {label}")
        if rec:
            timed[label] = rec["seconds_per_step"]
    cl = timed.get("graph, channels_last", 1e9) <= timed.get("graph, NCHW", 1e9)
    # the projected discriminator's extra cost on the same step (issue 20's target: <= 35% over the PatchGAN)
    for disc in ("patch+projected",) if a.quick else ("patch+projected", "projected"):
        step_record(base.replace(amp=amp0, cuda_graph=graph_on, channels_last=False, discriminator=disc), device,
                    reps, profile=False, sink=sink, label=f"b1 {amp0} graph, NCHW, discriminator {disc}")

    if a.official:
        extra = ["--ngf", "8", "--ndf", "8", "--netF_nc", "32"] if a.quick else []
        rec = train_step.official(a.official, size, 1, device, reps, extra)
        rec.update(bench="official_cut_step", label="official b1 fp32")
        emit(rec, sink)

    def matrix(batches, amps, graphs, profile_b8=False):
        for batch in batches:
            for amp in amps:
                if amp == "bf16" and device.type == "cuda" and not native_bf16():
                    continue
                for graph in graphs:
                    step_record(base.replace(amp=amp, batch_size=batch, cuda_graph=graph, channels_last=cl),
                                device, max(5, reps // batch),
                                profile=profile_b8 and graph == "on" and batch == 8, sink=sink,
                                label=f"b{batch} {amp} {'graph' if graph == 'on' else 'eager'}")

    if a.quick:
        matrix((1,), ("off",), ("off",))
    else:
        matrix((8,), (amp0,), ("on", "off"), profile_b8=True)
        matrix((1,), ("fp16", "off"), ("on", "off"))

    gen_args = ["--quick"] if a.quick else ["--data", a.data, "--images", str(a.gen_images), "--batch", "64",
                                            "--workers", "8"] + (["--channels-last"] if cl else [])
    try:
        rec = generate_bench.main(gen_args)
    except Exception as e:  # noqa: BLE001
        rec = {"bench": "generate", "error": f"{type(e).__name__}: {e}"[:600]}
    rec["label"] = "generate 7038" if not a.quick else "generate quick"
    emit(rec, sink)

    if not a.quick:
        matrix((4,), (amp0,), ("on", "off"))
        matrix((4, 8), ("fp16", "off"), ("on", "off"))
        step_record(base.replace(amp=amp0, cuda_graph="off", channels_last=not cl), device, reps, False, sink,
                    f"b1 {amp0} eager, {'NCHW' if cl else 'channels_last'}")
        if a.compile_probe and device.type == "cuda":
            step_record(base.replace(amp=amp0, cuda_graph="on", channels_last=cl, compile=True), device, reps,
                        True, sink, f"b1 {amp0} graph + compile")

    emit({"bench": "gpu_all", "seconds": round(time.time() - t_start, 1), "channels_last": cl}, sink)
    print(table(sink), file=sys.stderr)


def table(sink: list) -> str:
    rows = ["| config | s/step | steps/s | images/s | fraction of peak | kernels/step | GPU busy | copies | peak mem MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sink:
        if r.get("bench") in ("train_step", "official_cut_step") and "seconds_per_step" in r:
            rows.append(f"| {r['label']} | {r['seconds_per_step']} | {r['steps_per_s']} | {r['images_per_s']} | "
                        f"{r.get('fraction_of_peak', '')} | {r.get('kernels_per_step', '')} | "
                        f"{r.get('gpu_busy_share', '')} | {r.get('copy_share_of_kernel_time', '')} | "
                        f"{r.get('peak_memory_mb', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
