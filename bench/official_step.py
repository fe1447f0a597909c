"""Time the official CUT training step (taesungp/contrastive-unpaired-translation) with synthetic inputs.
Run with the official checkout as the working directory; prints one JSON line.

    cd path/to/official-cut && python /path/to/bench/official_step.py --size 256 --batch 1 --device cuda

Needs what the official code imports (torchvision; `dominate` only for its train.py, not here).
The step is what its train.py runs per iteration: set_input + optimize_parameters (D step, G+F step)."""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.getcwd())  # the official packages (options, models, util) import each other flatly


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a, extra = ap.parse_known_args()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if a.threads:
        torch.set_num_threads(a.threads)
    sys.argv = [sys.argv[0], "--dataroot", "unused", "--name", "bench_step", "--checkpoints_dir",
                "/tmp/official_step_ckpt", "--CUT_mode", "CUT", "--load_size", str(a.size), "--crop_size",
                str(a.size), "--batch_size", str(a.batch), "--gpu_ids", "0" if a.device == "cuda" else "-1", *extra]
    from models import create_model
    from options.train_options import TrainOptions

    opt = TrainOptions().parse()
    model = create_model(opt)
    g = torch.Generator().manual_seed(0)
    data = {"A": torch.rand(a.batch, 3, a.size, a.size, generator=g) * 2 - 1,
            "B": torch.rand(a.batch, 3, a.size, a.size, generator=g) * 2 - 1,
            "A_paths": ["a"] * a.batch, "B_paths": ["b"] * a.batch}
    model.data_dependent_initialize(data)  # builds its MLP head on the first batch
    model.setup(opt)
    model.parallelize()
    cuda = a.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step():
        model.set_input(data)
        model.optimize_parameters()

    for _ in range(a.warmup):
        step()
    with FlopCounterMode(display=False) as fc:
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.reps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(json.dumps({"bench": "official_cut_step", "device": torch.cuda.get_device_name() if cuda else "cpu",
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "size": a.size,
                      "batch": a.batch, "seconds_per_step": round(t, 5), "steps_per_s": round(1 / t, 3),
                      "images_per_s": round(a.batch / t, 3), "gflop_per_step": round(fc.get_total_flops() / 1e9, 1),
                      "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
                      "step_times_min_max": [round(min(times), 5), round(max(times), 5)]}))


if __name__ == "__main__":
    main()
