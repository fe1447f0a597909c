"""The command line: `cutlib train | generate | evaluate ...` (the console script), the same as
`python -m cutlib.train`, `python -m cutlib.generate` and `python -m cutlib.evaluate`. One entry point with
subcommands, as git and kaggle have: one name to remember, and `cutlib --help` lists the jobs. Each job
calls the functions the notebooks call; bad input exits 2 with a line naming the flag or path, a failed
job 1, and a result is one JSON line on stdout.

From a trained run to a submission file:
    cutlib train -f params/baseline.yaml --data DATA --out_dir runs/x
    cutlib generate --run-dir runs/x --data DATA             # runs/x/images.zip, validated
    cutlib evaluate runs/x/images.zip --paintings DATA/monet_jpg
"""
from __future__ import annotations

import sys

JOBS = {"train": "train CUT (python -m cutlib.train --help lists every field)",
        "generate": "a checkpoint to a validated images.zip, or a folder of PNGs",
        "evaluate": "score a zip or folder against the paintings (MiFID, FID, KID, SWD)"}


def main(argv=None) -> int:
    """`cutlib JOB ...`: the console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: cutlib {train,generate,evaluate} ...\n\n" + "\n".join(f"  {k:<9} {v}" for k, v in JOBS.items())
              + "\n\n" + (__doc__ or "").split("\n\n", 1)[1].strip())
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    if job == "train":
        from .train import main as train_main

        return train_main(rest)
    if job == "generate":
        from .generate import main as generate_main

        return generate_main(rest, prog="cutlib generate")
    if job == "evaluate":
        from .evaluate import main as evaluate_main

        return evaluate_main(rest, prog="cutlib evaluate")
    print(f"cutlib: unknown job {job!r}; one of: {', '.join(JOBS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
