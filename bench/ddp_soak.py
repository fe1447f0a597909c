"""Soak: the 2-rank gloo smoke training (torchrun, as a new user runs it) N times; counts the runs that
exited non-zero and the ranks that aborted (SIGABRT, 'terminate called ...') at teardown.

    python bench/ddp_soak.py --runs 50            # one JSON line; the tails of failed runs on stderr
    python bench/ddp_soak.py --quick              # CI size: 2 runs
    python bench/ddp_soak.py --runs 20 --hold-gil 30   # the teardown race made likely (below)

--hold-gil S runs each rank with `sys.setswitchinterval(S)`: the main thread then keeps the GIL while it
runs Python code and gives it up only where it blocks (I/O, a collective's wait). A gloo worker thread
that must take the GIL to drop a tensor it was handed (what aborted ranks at teardown, issue 27) waits
until then, so if the main thread goes from its last collective to interpreter exit without blocking the
worker meets the finalizing interpreter: 7 of 26 runs of the code before the fix aborted so on a machine
where 66 plain runs never did (bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


HOLD_GIL_RANK = """import runpy, sys
sys.setswitchinterval(float(sys.argv.pop(1)))
runpy.run_module("cutlib.train", run_name="__main__", alter_sys=True)
"""


def one_run(out: Path, data: str, extra: list[str], timeout: float, hold_gil: float = 0.0) -> dict:
    entry = ["-m", "cutlib.train"]
    if hold_gil:
        (out.parent / "hold_gil_rank.py").write_text(HOLD_GIL_RANK)
        entry = [str(out.parent / "hold_gil_rank.py"), str(hold_gil)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *entry,
           "-f", "params/smoke.yaml", "--data", data, "--out_dir", str(out), *extra]
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    aborted = len(re.findall(r"terminate called|exitcode\s*:\s*-6|SIGABRT", text))
    finished = (out / "ckpt" / "latest.pt").is_file()
    return {"rc": rc, "aborted_ranks": aborted, "finished_training": finished, "seconds": round(time.time() - t0, 1),
            "warnings": sorted(set(re.findall(r"(\w+Warning): ([^\n]{0,80})", text))), "tail": text[-1500:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, help="how many runs (default 50; 2 with --quick)")
    ap.add_argument("--data", default="", help="data folder (default: the built-in demo data, made once)")
    ap.add_argument("--args", default="", help="extra training flags, e.g. \"--eval_every 0\"")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--quick", action="store_true", help="CI size: 2 runs unless --runs says")
    ap.add_argument("--hold-gil", type=float, default=0.0, metavar="S",
                    help="each rank's sys.setswitchinterval(S): makes the teardown race likely (see above)")
    a = ap.parse_args(argv)
    runs = a.runs or (2 if a.quick else 50)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if not data:
            sys.path.insert(0, str(ROOT))
            from cutlib.data import make_demo_data

            data = str(make_demo_data(Path(tmp) / "demo", n_photos=12, n_paintings=8, size=64, seed=0))
        results = []
        for i in range(runs):
            res = one_run(Path(tmp) / f"run{i}", data, shlex.split(a.args), a.timeout, a.hold_gil)
            results.append(res)
            if res["rc"] != 0 or res["aborted_ranks"]:
                print(f"soak: run {i}: rc {res['rc']}, aborted ranks {res['aborted_ranks']}:\n{res['tail']}",
                      file=sys.stderr)
    import torch

    out = {"bench": "ddp_soak", "torch": torch.__version__, "runs": runs,
           "non_zero_exits": sum(r["rc"] != 0 for r in results),
           "aborted_ranks": sum(r["aborted_ranks"] for r in results),
           "finished_training": sum(r["finished_training"] for r in results),
           "seconds_per_run": round(sum(r["seconds"] for r in results) / max(runs, 1), 1),
           "warnings": sorted({w for r in results for w in map(tuple, r["warnings"])}), "args": a.args,
           "hold_gil": a.hold_gil}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
