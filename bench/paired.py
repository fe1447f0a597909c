"""A lever against its reference at equal steps, or at equal training time, over seeds: the paired tables
and "mean change" figures of bench/README.md. One run's spread is 10-20 FID until ~7,000 steps, so a lever
is judged by its changes against the same seed's reference at the same checkpoints, never by one curve
against another.

    python bench/paired.py CURVE_JSON [CURVE_JSON ...] --pair LEVER_RUN=REFERENCE_RUN [--pair ...] [--colour]
        [--seconds-per-step RUN=S ...]

With --seconds-per-step for every paired run (each run's own step time on the machine the comparison is
about, e.g. bench/train_step.py -f ... --variant), points pair at equal training minutes (step x S / 60,
rounded) instead of equal steps: a lighter recipe against the file it replaces, at the same wall-clock.

Reads the curve.json files bench/curve.py wrote (their points merge by run name, so the reference may sit
in one file and the lever in another), pairs each lever run with its reference (one --pair per seed) at
the steps both scored, prints a markdown table (FID / KID x1000 / SWD at 128 and 64 px on each side and
the change; with --colour also each side's C* . palette spread . hue kept a* / b*) and the mean change
over all pairs with how many of them the lever is lower at; the summary as one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIGURES = ("FID", "KID x1000", "SWD 128", "SWD 64")


def figures(point: dict) -> tuple[float, ...]:
    return point["fid"], point["kid_x1000"], point["swd_levels"]["128"], point["swd_levels"]["64"]


def colour_figures(point: dict) -> str:
    c = point["colour"]
    return f"{c['chroma']:.1f} · {c['palette_spread']:.1f} · {c['hue_kept_a']:.2f} / {c['hue_kept_b']:.2f}"


def merged_runs(curve_files: list[Path]) -> dict[str, dict[str, dict]]:
    """{run: {step: point}} over all files; a later file's point for the same run and step wins."""
    runs: dict[str, dict[str, dict]] = {}
    for path in curve_files:
        try:
            file_runs = json.loads(Path(path).read_text())["runs"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"{path}: not a curve.json from bench/curve.py ({e})")
        for run, points in file_runs.items():
            runs.setdefault(run, {}).update(points)
    return runs


def by_minute(points: dict[str, dict], seconds_per_step: float) -> dict[str, dict]:
    """The run's points keyed by training minute (step x seconds_per_step / 60, rounded) instead of step."""
    return {str(round(int(step) * seconds_per_step / 60)): p for step, p in points.items()}


def paired_rows(reference: dict[str, dict], lever: dict[str, dict]) -> list[dict]:
    """One row per key (step, or minute) both scored, in order: each side's figures and the change
    (lever - reference)."""
    rows = []
    for step in sorted(set(reference) & set(lever), key=int):
        ref, lev = figures(reference[step]), figures(lever[step])
        rows.append({"step": int(step), "reference": ref, "lever": lev,
                     "change": tuple(b - a for a, b in zip(ref, lev))})
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean change per figure over all pairs, and at how many pairs the lever is lower (better)."""
    n = len(rows)
    changes = [r["change"] for r in rows]
    return {"pairs": n,
            "mean_change": {k: round(sum(c[i] for c in changes) / n, 2) if n else None for i, k in enumerate(FIGURES)},
            "lever_lower": {k: sum(c[i] < 0 for c in changes) for i, k in enumerate(FIGURES)}}


def markdown(pairs: list[tuple[str, str, list[dict]]], runs: dict, colour: bool, key: str = "step") -> str:
    """The table of every (lever, reference, paired rows) in turn; `runs` gives the colour figures."""
    head = f"| lever | reference | {key} | reference FID / KID / SWD 128 / SWD 64 | lever | change |"
    head += " reference C* · spread · hue kept | lever |" if colour else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for lever, reference, rows in pairs:
        for r in rows:
            row = (f"| {lever} | {reference} | {r['step']:,} | " + " / ".join(f"{v:.1f}" for v in r["reference"])
                   + " | " + " / ".join(f"{v:.1f}" for v in r["lever"]) + " | "
                   + " / ".join(f"{v:+.1f}" for v in r["change"]) + " |")
            if colour:
                step = str(r["step"])
                row += f" {colour_figures(runs[reference][step])} | {colour_figures(runs[lever][step])} |"
            lines.append(row)
    return "\n".join(lines)


def parse_pair(text: str) -> tuple[str, str]:
    lever, sep, reference = text.partition("=")
    if not (sep and lever and reference):
        raise argparse.ArgumentTypeError(f"--pair {text!r}: expected LEVER_RUN=REFERENCE_RUN")
    return lever, reference


def parse_seconds(text: str) -> tuple[str, float]:
    run, _, seconds = text.partition("=")
    try:
        return run, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seconds-per-step {text!r}: expected RUN=SECONDS") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("curves", nargs="+", type=Path, help="curve.json files written by bench/curve.py")
    ap.add_argument("--pair", action="append", type=parse_pair, required=True, metavar="LEVER=REFERENCE",
                    help="a lever run and its reference run (the same seed); repeat for each seed")
    ap.add_argument("--colour", action="store_true", help="also each side's colour figures (cutlib.colour)")
    ap.add_argument("--seconds-per-step", action="append", default=[], type=parse_seconds, metavar="RUN=SECONDS",
                    help="each paired run's step time: pair at equal training minutes, not steps")
    args = ap.parse_args(argv)
    runs = merged_runs(args.curves)
    paired_runs = {name for pair in args.pair for name in pair}
    for run in paired_runs:
        if run not in runs:
            raise SystemExit(f"--pair: no run {run!r} in {', '.join(map(str, args.curves))} "
                             f"(runs there: {', '.join(sorted(runs)) or 'none'})")
    timed = dict(args.seconds_per_step)
    if timed:
        if paired_runs - set(timed):
            raise SystemExit(f"--seconds-per-step: none given for {', '.join(sorted(paired_runs - set(timed)))}")
        runs = {run: by_minute(points, timed[run]) if run in timed else points for run, points in runs.items()}
    pairs = [(lever, reference, paired_rows(runs[reference], runs[lever])) for lever, reference in args.pair]
    print(markdown(pairs, runs, args.colour, "minute" if timed else "step"), file=sys.stderr)
    rows = [r for *_, pair_rows in pairs for r in pair_rows]
    result = summary(rows)
    if not rows:
        print(f"paired: the pairs share no scored {'minute' if timed else 'step'}", file=sys.stderr)
    print(json.dumps({"bench": "paired", "pairs": [f"{a}={b}" for a, b in args.pair],
                      "at_equal": "minutes" if timed else "steps", **result}))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
