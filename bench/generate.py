"""Generation throughput: the 03 path end to end (decode JPEG -> G -> PNG -> zip) next to G's painting
alone (cutlib.painting.paint: the border and the kept colour, as generation runs it) on the same images in
the same run, in the dtype `cutlib generate` picks (resolve_amp "auto"), read against the machine's peak on
G's own forward convolutions (bench/peak.py). Prints one JSON line.

    python bench/generate.py --data ../shared/data/gan-getting-started --images 64
    python bench/generate.py --quick     # CI-sized: demo photos, 64 px, narrow generator
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cutlib.data import eval_image, list_images, make_demo_data  # noqa: E402
from cutlib.generate import translate_files, validate_zip, write_zip  # noqa: E402
from cutlib.hardware import resolve_amp  # noqa: E402
from cutlib.nets import Generator, init_weights  # noqa: E402
from cutlib.painting import PAINT_BORDER, paint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import conv_peak, conv_shapes  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo", help='Kaggle-layout folder or "demo"')
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="JPEG-decoding processes")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--g-block", default="resnet", choices=["resnet", "mobile"], help="G's residual block")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"], help="as `cutlib generate` picks (auto)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.images, a.size, a.ngf, a.batch, a.workers = 16, 64, 8, 8, 0
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    root = make_demo_data(tmp / "demo", n_photos=a.images, n_paintings=1) if a.data == "demo" else Path(a.data)
    photos = list_images(root / "photo_jpg")
    files = [photos[i % len(photos)] for i in range(a.images)]  # a smaller folder is cycled to reach --images
    jobs = [(f, "") for f in files]
    G = init_weights(Generator(a.ngf, block=a.g_block)).to(device).eval().requires_grad_(False)
    amp = resolve_amp(a.amp, device)  # auto: what `cutlib generate` and 03 use
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # G's painting alone, inputs already decoded and on the device
    x = torch.stack([eval_image(f, a.size) for f in files[:512]]).to(device)
    ctx = lambda: torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)  # noqa: E731
    painting = lambda xb: paint(G, xb, PAINT_BORDER)  # noqa: E731
    with torch.no_grad(), ctx():
        painting(x[: a.batch])  # warm-up
        with FlopCounterMode(display=False) as fc:
            painting(x[: a.batch])
        flops_per_image = fc.get_total_flops() / len(x[: a.batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(x), a.batch):
            painting(x[i: i + a.batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_forward = (time.perf_counter() - t0) * len(files) / len(x)  # projected to all images
    peak = {}
    if device.type == "cpu":  # the CPU's own peak on G's forward convs at the painted size
        with torch.no_grad():
            shapes = conv_shapes({"G": G}, lambda: painting(x[: a.batch]))
        peak, _ = conv_peak(shapes, amp)

    # the whole 03 path
    t0 = time.perf_counter()
    stream = ((f"{i:05d}.png", img) for i, img in
              translate_files(G, jobs, a.size, 256, a.batch, device, amp, a.workers))
    written = write_zip(stream, tmp / "images.zip")
    t_e2e = time.perf_counter() - t0
    validate_zip(tmp / "images.zip", len(files), len(files))
    t_validated = time.perf_counter() - t0
    out = {
        "bench": "generate", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "images": len(files), "size": a.size, "batch": a.batch,
        "ngf": a.ngf, "g_block": a.g_block, "quick": a.quick,
        "amp": str(amp).replace("torch.", "") if amp else "off", "border": PAINT_BORDER,
        "gflop_per_image": round(flops_per_image / 1e9, 2),
        "forward_images_per_s": round(len(files) / t_forward, 2),
        "forward_gflop_per_s": round(flops_per_image * len(files) / t_forward / 1e9, 1),
        "end_to_end_images_per_s": round(written["count"] / t_e2e, 2),
        "pipeline_efficiency": round(t_forward / t_e2e, 3),
        "zip_mb": round(written["bytes"] / 2**20, 1),
        "seconds_to_zip": round(t_e2e, 2), "seconds_to_validated_zip": round(t_validated, 2),
        "projected_seconds_for_7038": round(7038 / (written["count"] / t_validated), 1),
    }
    if peak:
        p = peak["peak_gflop_per_s"] * 1e9
        out.update(peak_gflop_per_s=peak["peak_gflop_per_s"],
                   conv_ceiling_gflop_per_s=peak["contiguous"]["ceiling_gflop_per_s"],
                   channels_last_conv_ceiling_gflop_per_s=peak["channels_last"]["ceiling_gflop_per_s"],
                   forward_fraction_of_peak=round(flops_per_image * len(files) / t_forward / p, 3),
                   end_to_end_fraction_of_peak=round(flops_per_image * written["count"] / t_e2e / p, 3))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
