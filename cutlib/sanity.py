"""Pre-flight checks for 01_sanity: environment, data, networks, one real training step, ETA."""
from __future__ import annotations

import os
import platform
import time
import traceback

import numpy as np
import torch

from .config import TrainConfig


class Report:
    """Runs checks, each recorded as PASS/FAIL with a detail line; `summary()` fails if any failed."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rows: list[tuple[str, str, str]] = []
        self.facts: dict = {}

    def _run(self, name: str, fn) -> None:
        try:
            detail = fn()
            self.rows.append((name, "PASS", detail))
        except Exception as e:  # noqa: BLE001 - a sanity check reports every failure, it never hides one
            self.rows.append((name, "FAIL", f"{type(e).__name__}: {e}"))
            traceback.print_exc(limit=2)
        print(f"[{self.rows[-1][1]}] {name}: {self.rows[-1][2]}")

    def environment(self):
        from .hardware import resolve_amp, resolve_device

        def check():
            device = resolve_device(self.cfg.device)
            amp = resolve_amp(self.cfg.amp, device)
            parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"device {device}",
                     f"amp {str(amp).replace('torch.', '') if amp else 'off'}", f"threads {torch.get_num_threads()}"]
            if device.type == "cuda":
                free, total = torch.cuda.mem_get_info(device)
                parts += [torch.cuda.get_device_name(device), f"free {free / 2**30:.1f}/{total / 2**30:.1f} GiB"]
            elif hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                parts.append(f"RAM free {free / 2**30:.1f} GiB")
            self.facts["device"] = device
            return ", ".join(parts)

        self._run("environment", check)

    def data(self, n_show: int = 4):
        """Counts per domain and unreadable files; returns a grid image of a few photos and paintings."""
        from .data import eval_image
        from .train import prepare_data
        from .viz import pairs_grid

        grid = {}

        def check():
            photos, monets, skipped = prepare_data(self.cfg)
            self.facts.update(photos=photos, monets=monets)
            n = min(n_show, len(photos), len(monets))
            grid["img"] = pairs_grid(torch.stack([eval_image(p, 128) for p in photos[:n]]),
                                     torch.stack([eval_image(p, 128) for p in monets[:n]]))
            return f"{len(photos)} photos in {self.cfg.photo_path}, {len(monets)} paintings in " \
                   f"{self.cfg.monet_path}, {skipped} unreadable file(s) skipped"

        self._run("data", check)
        return grid.get("img")

    def networks(self):
        from .model import build_networks
        from .nets import count_params

        def check():
            G, D, F, _ = build_networks(self.cfg)
            return f"G {count_params(G) / 1e6:.3f}M, D {count_params(D) / 1e6:.3f}M, MLP {count_params(F) / 1e6:.3f}M"

        self._run("networks", check)

    def training_step(self, timed_steps: int = 2):
        """One real training step on real data (finite losses), then timed steps for s/step and the ETA;
        returns a photo -> output grid from the (barely trained) EMA generator."""
        from .data import UnpairedDataset, eval_image
        from .hardware import resolve_device
        from .model import CUTModel
        from .progress import budget_outlook, checkpoint_hint, eta_text
        from .viz import pairs_grid

        out = {}

        def check():
            if "photos" not in self.facts:
                raise RuntimeError("no data (see the data check)")
            cfg = self.cfg
            model = CUTModel(cfg, resolve_device(cfg.device))
            ds = UnpairedDataset(self.facts["photos"], self.facts["monets"], cfg.image_size, cfg.load_size,
                                 cfg.flip, cfg.seed, 10**6)
            batch = [ds[k] for k in range(cfg.batch_size)]
            photo = torch.stack([b[0] for b in batch])
            monet = torch.stack([b[1] for b in batch])
            losses = {k: float(v) for k, v in model.train_step(photo, monet).items()}
            bad = [k for k, v in losses.items() if not np.isfinite(v)]
            if bad:
                raise FloatingPointError(f"non-finite losses {bad}")
            # Under CUDA graphs the next steps are eager warm-ups and the capture: time the replays that
            # training runs, not those (they are ~3x slower and would triple the ETA).
            for _ in range(model.graphs.warmup if model.graphs is not None else 0):
                model.train_step(photo, monet)
            times = []
            for _ in range(timed_steps):
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.train_step(photo, monet)
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            sps = float(np.median(times))
            budget_s = cfg.time_budget_hours * 3600
            eta_s, reach = budget_outlook(0, cfg.steps, 1 / sps, 0.0, budget_s)
            self.facts.update(seconds_per_step=sps, eta_hours=eta_s / 3600, budget_steps=reach, losses=losses)
            sample = torch.stack([eval_image(p, cfg.image_size) for p in self.facts["photos"][:2]])
            out["img"] = pairs_grid(sample, model.translate(sample))
            return (", ".join(f"{k} {v:.3f}" for k, v in losses.items()) +
                    f"; {sps:.3f} s/step -> {eta_text(sps, cfg.steps, budget_s)}; "
                    f"{checkpoint_hint(sps, cfg.ckpt_every)}")

        self._run("training step", check)
        return out.get("img")

    def table(self) -> str:
        w = max(len(r[0]) for r in self.rows)
        return "\n".join(f"{name:<{w}}  {status}  {detail}" for name, status, detail in self.rows)

    def summary(self) -> None:
        """Prints the PASS/FAIL table, then raises if a check failed. Returns nothing, so that the notebook
        cell calling it shows the table once (it printed twice under `print(report.summary())`)."""
        failed = [r[0] for r in self.rows if r[1] == "FAIL"]
        print(self.table() + f"\n\nOVERALL: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}")
        if failed:
            from .notebook import NotebookError

            raise NotebookError(f"sanity checks failed: {', '.join(failed)}")
