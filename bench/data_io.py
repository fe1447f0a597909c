"""Image I/O speed: the training loader per worker, decoding and PNG encoding, and writing images.zip.
Prints one JSON line.

    python bench/data_io.py --photos DIR --paintings DIR [--size 256] [--workers 1,4] [--samples 400]
                            [--zip-images 7038]
    python bench/data_io.py --quick     # CI-sized: the demo data, 64 px, a few samples, a 40-image zip

- loader: `UnpairedDataset` (decode, resize to 286/256 of the crop, random crop, flip, float) through a
  DataLoader at batch 1, after a warm-up, for each worker count; images/s counts both images of a
  sample (a batch-1 step eats one photo and one painting).
- decode: one thread, PIL (`cutlib.data.load_rgb`, what the loader uses) beside torchvision.io on JPEG.
- encode: one thread, PIL PNG (what `write_zip` uses, compress level 1) beside torchvision.io's.
- zip: `write_zip` of --zip-images uint8 images (decoded photos, cycled: the generator is left out).
Run from another checkout's root (copy this file there) to measure that version's code.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from cutlib.data import UnpairedDataset, list_images, load_rgb, make_demo_data  # noqa: E402
from cutlib.generate import png_bytes, write_zip  # noqa: E402


def loader_rate(photos, paintings, size: int, workers: int, samples: int) -> float:
    """Samples per second through a DataLoader, after one warm-up batch per worker."""
    ds = UnpairedDataset(photos, paintings, size, size * 286 // 256, True, 0, samples + 4 * max(workers, 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, shuffle=False)
    it = iter(loader)
    for _ in range(max(workers, 1)):  # workers started and warm
        next(it)
    t0 = time.perf_counter()
    for _ in range(samples):
        next(it)
    return samples / (time.perf_counter() - t0)


def per_image_rate(fn, items, rounds: int = 3) -> float:
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        rates.append(len(items) / (time.perf_counter() - t0))
    return statistics.median(rates)


def tv_decode(path):
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def tv_png(img: np.ndarray) -> bytes:
    from torchvision.io import encode_png

    return encode_png(torch.from_numpy(img).permute(2, 0, 1).contiguous(), compression_level=1).numpy().tobytes()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", help="photo folder (default: the built-in demo data)")
    ap.add_argument("--paintings", help="painting folder")
    ap.add_argument("--size", type=int, default=256, help="training crop")
    ap.add_argument("--workers", default="1,4", help="loader worker counts, comma-separated")
    ap.add_argument("--samples", type=int, default=400, help="samples timed per worker count")
    ap.add_argument("--codec-images", type=int, default=200, help="images timed for decode and encode")
    ap.add_argument("--zip-images", type=int, default=7038, help="images written into the timed zip")
    ap.add_argument("--quick", action="store_true", help="CI-sized run on the demo data")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.workers, a.samples, a.codec_images, a.zip_images = 64, "0,1", 8, 8, 40
    warnings.filterwarnings("ignore", message=".*TorchCodec.*")  # torchvision.io's deprecation, measured anyway
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if a.photos:
            photos, paintings = list_images(a.photos), list_images(a.paintings or a.photos)
        else:
            root = make_demo_data(Path(tmp) / "demo", n_photos=24, n_paintings=12, size=max(a.size, 64))
            photos, paintings = list_images(root / "photo_jpg"), list_images(root / "monet_jpg")
        out = {"size": a.size, "cpus": os.cpu_count(), "torch": torch.__version__.split("+")[0]}
        try:
            import torchvision
            out["torchvision"] = torchvision.__version__.split("+")[0]
        except ImportError:
            out["torchvision"] = None
        for w in (int(v) for v in a.workers.split(",")):
            rate = loader_rate(photos, paintings, a.size, w, a.samples)
            out[f"loader_workers_{w}"] = {"samples_per_s": round(rate, 1), "images_per_s": round(2 * rate, 1)}
        codec = photos[: a.codec_images]
        out["decode_images_per_s"] = {"pil": round(per_image_rate(load_rgb, codec), 1)}
        if out["torchvision"]:
            out["decode_images_per_s"]["torchvision"] = round(per_image_rate(tv_decode, codec), 1)
        arrays = [np.array(load_rgb(p)) for p in codec]  # writable: torch.from_numpy warns otherwise
        out["png_encode_images_per_s"] = {"pil": round(per_image_rate(png_bytes, arrays), 1)}
        if out["torchvision"]:
            out["png_encode_images_per_s"]["torchvision"] = round(per_image_rate(tv_png, arrays), 1)
        named = ((f"{i:05d}.png", img) for i, img in enumerate(islice(cycle(arrays), a.zip_images)))
        t0 = time.perf_counter()
        written = write_zip(named, Path(tmp) / "images.zip")
        secs = time.perf_counter() - t0
        out["zip"] = {"images": written["count"], "seconds": round(secs, 2),
                      "images_per_s": round(written["count"] / secs, 1), "mb": round(written["bytes"] / 2**20, 1),
                      "encoder_threads": min(8, os.cpu_count() or 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
