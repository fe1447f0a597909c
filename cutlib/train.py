"""CUT training: the loop around CUTModel's step (data, logging, samples, evaluation, checkpoints, time
budget), and the command line, which is also the torchrun entry point.

Usage:  python -m cutlib.train [-f params/smoke.yaml] [--steps 100 --out_dir runs/x ...]  (--help: every field)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from .checkpoint import link_atomic, load_checkpoint, prune_numbered, save_checkpoint
from .colour import colour_panel
from .config import KEEP_CKPTS, ConfigError, TrainConfig
from .data import UnpairedDataset, eval_image, make_demo_data, scan_images
from .distributed import (all_ranks_any, barrier, broadcast_from_rank0, control_group, max_over_ranks, rank_mean,
                          rank_world)
from .hardware import resolve_amp, resolve_device
from .jobs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, USAGE_ERRORS
from .model import LOSS_KEYS, CUTModel
from .progress import TrainProgress, progress_every_s, progress_style
from .schedule import budget_origin, lr_factor_at
from .stopping import StopNow, StopRequest, TrainingInterrupted, exit_status, signal_name
from .viz import save_pairs_grid


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN/inf; the last good checkpoint is left intact."""


# ---------------------------------------------------------------------------------------------- loop

def prepare_data(cfg: TrainConfig):
    """Make the demo data if asked for, then scan both folders (bad files skipped with a warning)."""
    if cfg.data == "demo" and not (cfg.photo_dir or cfg.monet_dir):
        make_demo_data(cfg.data_root)
    photos, bad_p = scan_images(cfg.photo_path, "photo folder (photo_dir)")
    monets, bad_m = scan_images(cfg.monet_path, "Monet folder (monet_dir)")
    return photos, monets, len(bad_p) + len(bad_m)


class Evaluator:
    """In-training MiFID and SWD: translate a fixed set of photos with the EMA generator (at the training
    size, upsampled to the 256 px of a submission) and score them against the Monet folder."""

    def __init__(self, cfg: TrainConfig, photos: list[Path], device: torch.device):
        from .metrics import InceptionFeatures, default_cache_dir, features_of, sample_images
        from .swd import MAX_IMAGES, descriptors

        self.cfg, self.device = cfg, device
        self.jobs = [(p, "") for p in photos[:cfg.eval_photos]]
        self.extractor = InceptionFeatures(cfg.fid_weights or None, device)
        self.real = features_of(cfg.monet_path, self.extractor, default_cache_dir())
        self.real_swd = descriptors(sample_images(cfg.monet_path, MAX_IMAGES), seed=1)

    def __call__(self, model: CUTModel) -> dict:
        from .generate import translate_files
        from .metrics import scores
        from .swd import MAX_IMAGES, descriptors, swd

        t0 = time.time()
        images = [img for _, img in translate_files(model.ema.model, self.jobs, self.cfg.image_size, 256,
                                                    batch_size=8, device=self.device, amp_dtype=model.amp_dtype)]
        res = {**scores(self.extractor(images), self.real),
               **swd(descriptors(images[:MAX_IMAGES]), self.real_swd)}
        return {**{k: round(v, 6) if isinstance(v, float) else v for k, v in res.items()},
                "eval_seconds": round(time.time() - t0, 2)}


ARCH_FIELDS = ("ngf", "ndf", "n_blocks", "g_block", "antialias", "residual_output", "discriminator", "nce_layers",
               "image_size")


def check_resumable(saved: dict, cfg: TrainConfig, path) -> None:
    """Resuming with another architecture or image size would silently train something else."""
    from .checkpoint import CheckpointError

    now = cfg.to_dict()
    # a field newer than the checkpoint was trained with its default: what the code did before it existed
    was = {k: saved.get(k, TrainConfig.__dataclass_fields__[k].default) for k in ARCH_FIELDS}
    diff = [f"{k}={was[k]!r} (config: {now[k]!r})" for k in ARCH_FIELDS if was[k] != now[k]]
    if diff:
        raise CheckpointError(f"cannot resume from {path}: it was trained with {', '.join(diff)}; "
                              f"use a new out_dir or the checkpoint's values")


def drop_metrics_after(path: Path, step: int) -> None:
    """On resume, forget log lines of steps the checkpoint does not contain (a killed run wrote them)."""
    if not path.exists():
        return
    from .checkpoint import atomic_write

    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))


def first_nonfinite(pending: list[tuple[int, dict]]) -> tuple[int, str] | None:
    """(step, loss name) of the first non-finite loss since the last check; one device sync in all."""
    if not pending:
        return None
    bad = ~torch.isfinite(torch.stack([torch.stack([v[k].float() for k in LOSS_KEYS]) for _, v in pending]))
    if not bool(bad.any()):
        return None
    i, j = bad.nonzero()[0].tolist()
    return pending[i][0], LOSS_KEYS[j]


def resume_command(cfg: TrainConfig) -> str:
    return f"python -m cutlib.train -f {Path(cfg.out_dir) / 'config.yaml'} --resume true"


def train(cfg: TrainConfig, progress: bool = True, on_log=None, until_step: int | None = None,
          clock=time.monotonic) -> dict:
    """Train per `cfg`; returns a summary dict. Writes <out_dir>/{config.yaml, metrics.jsonl, ckpt/, samples/}.

    until_step: pause after that step (checkpoint written); resume=True continues the same schedule.
    Under torchrun (an initialised process group) every rank trains on its own shard of both domains;
    rank 0 alone logs, samples, evaluates and checkpoints. `clock` (seconds) drives the time budget and
    the time lr schedule; tests pass a fake one.

    A SIGTERM or SIGINT (or a KeyboardInterrupt from `on_log`) finishes the step in flight, writes its
    checkpoint, metrics line and samples, then raises TrainingInterrupted (every rank at the same step);
    resume=True continues exactly. A second signal (after cutlib.stopping.REPEAT_GRACE_S) stops at once."""
    with StopRequest() as stop:
        return _train(cfg, progress, on_log, until_step, clock, stop)


def _train(cfg, progress, on_log, until_step, clock, stop: StopRequest) -> dict:
    t_start = clock()
    rank, world = rank_world()
    device = run_device(cfg, rank, world)
    amp_dtype = resolve_amp(cfg.amp, device)  # every parameter error before any work
    # rank 0 alone makes demo data and decodes every file once; the others get its lists
    photos, monets, n_skipped = broadcast_from_rank0(prepare_data(cfg) if rank == 0 else None, world)
    model = CUTModel(cfg, device, amp_dtype)
    run = RunFiles(cfg, rank, on_log, stop, clock)
    start = run.open(model)
    # The budget and the time lr schedule count the run's training time, every resume together: the clock
    # reading at which a run never stopped would have started (under the notebook launcher, when 02
    # launched torchrun). A resumed cpu.yaml run goes on annealing where it stopped and ends on the same
    # total budget; a larger time_budget_hours on resume extends it.
    t_budget = budget_origin(t_start) - model.train_seconds
    batches = iter(make_loader(cfg, photos, monets, start, rank, world, device))
    run.sample_photos = torch.stack([eval_image(p, cfg.image_size) for p in colour_panel(photos, 4)]) \
        if rank == 0 and cfg.sample_every else None  # photos of strong colours: does a sunset keep its orange?
    run.evaluator = Evaluator(cfg, photos, device) if cfg.eval_every and rank == 0 else None
    ctl = control_group(world)
    # a live bar where a person watches, a line every CUTLIB_PROGRESS_EVERY_S where output is stored
    shown = TrainProgress(start, cfg.steps, t_budget, clock(), cfg.time_budget_hours * 3600,
                          progress_style() if progress and rank == 0 else "off", progress_every_s())
    pending: list[tuple[int, dict]] = []
    t_log = t_prev = clock()
    try:
        while True:
            # one decision before every step, agreed by all ranks in one collective: the largest signal
            # any rank has seen, and whether any rank's budget still holds a step and a checkpoint
            signum, short = max_over_ranks([stop.signum or 0, budget_short(cfg, model, clock() - t_budget,
                                                                            run.stop_seconds)], world, ctl)
            reason = stop_reason(model.step, cfg.steps, until_step, signum, bool(short))
            if reason:
                break
            photo, monet = next(batches)
            lr = model.set_lr(lr_factor_at(model.step, clock() - t_budget, cfg))
            pending.append((model.step, model.train_step(photo, monet)))
            now = clock()
            shown.update(model.step, now)
            model.step_seconds_max = max(model.step_seconds_max * 0.99, now - t_prev)  # slow-decaying worst case
            t_prev = now
            if model.step % cfg.log_every == 0 or model.step % cfg.ckpt_every == 0:
                shown.losses(run.log(model, pending, lr, now - t_start, now - t_log, world))
                pending, t_log = [], clock()
            run.periodic(model, final=False, t_budget=t_budget)
        # what every stop does, whatever its reason: the last losses, samples, evaluation and checkpoint
        if pending:
            shown.losses(run.log(model, pending, lr, clock() - t_start, clock() - t_log, world))
        run.periodic(model, final=True, t_budget=t_budget)
    finally:
        shown.close(t_prev)
        run.close()
    barrier(world, model.device)  # nobody leaves before rank 0 has written its checkpoint
    summary = {"out_dir": cfg.out_dir, "start_step": start, "step": model.step, "stop_reason": reason,
               "seconds": round(clock() - t_start, 2), "skipped_images": n_skipped,
               "skipped_steps": dict(model.skipped), "device": str(device), "world_size": world,
               "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
               "cuda_graph": model.graphs is not None and not model.graphs.failed}
    if reason == "signal":
        summary["signal"] = signal_name(signum)
        raise TrainingInterrupted(
            f"{signal_name(signum)}: stopped after step {model.step:,} of {cfg.steps:,}; checkpoint "
            f"{run.latest} written. Resume: {resume_command(cfg)} (in a notebook: resume=True)", model.step,
            str(run.latest), signum, summary)
    return summary


def run_device(cfg: TrainConfig, rank: int, world: int) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    return device


def make_loader(cfg: TrainConfig, photos, monets, start: int, rank: int, world: int, device):
    """The batches of steps start..steps. Global sample k = (step * world + rank) * batch + i: each rank
    its own shard of the same stream, and one process with world * batch images per step sees exactly the
    same samples."""
    b = cfg.batch_size
    indices = [(s * world + rank) * b + i for s in range(start, cfg.steps) for i in range(b)]
    dataset = UnpairedDataset(photos, monets, cfg.image_size, cfg.load_size, cfg.flip, cfg.seed,
                              cfg.steps * b * world)
    return torch.utils.data.DataLoader(
        dataset, batch_size=b, sampler=indices, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed))  # its own: iterators must not draw from the global RNG


def budget_short(cfg: TrainConfig, model: CUTModel, elapsed_s: float, stop_seconds: float) -> bool:
    """Whether the time budget no longer holds one more (worst-case) step and what a stop writes. A fresh
    run trains at least one step, so that its step time is known; a resumed run whose budget is spent none."""
    if not cfg.time_budget_hours or not model.step:
        return False
    return cfg.time_budget_hours * 3600 - elapsed_s < 2 * model.step_seconds_max + 2 * stop_seconds + 1.0


def stop_reason(step: int, steps: int, until_step: int | None, signum: int, budget_short: bool) -> str | None:
    """Why the run stops before its next step ("steps", "until_step", "signal", "time_budget"), or None.
    A run that has reached its last step ends normally even if a signal came in during that step."""
    if step >= steps:
        return "steps"
    if until_step and step >= until_step:
        return "until_step"
    if signum:
        return "signal"
    return "time_budget" if budget_short else None


class RunFiles:
    """What a run writes besides the model's state: config.yaml, metrics.jsonl, checkpoints, samples and
    in-training evaluations (rank 0 alone writes; every rank checks losses), each at most once a step."""

    def __init__(self, cfg: TrainConfig, rank: int, on_log, stop: StopRequest, clock=time.monotonic):
        self.cfg, self.rank, self.on_log, self.stop, self.clock = cfg, rank, on_log, stop, clock
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "ckpt"
        self.latest = self.ckpt_dir / "latest.pt"
        self.metrics = None
        self.sample_photos = self.evaluator = None
        self.seconds = {"ckpt": 0.0, "eval": 0.0}  # the last checkpoint's and evaluation's time
        self.done: dict[str, int] = {}  # what -> the step it was last written at

    def open(self, model: CUTModel) -> int:
        """Folders, the resumed state (when asked and present), config.yaml; returns the first step."""
        cfg = self.cfg
        if self.rank == 0:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(exist_ok=True)
            for stale in self.ckpt_dir.glob(".*.tmp"):  # a write a killed run never finished
                stale.unlink(missing_ok=True)
        if cfg.resume and self.latest.exists():
            ckpt = load_checkpoint(self.latest, map_location=model.device)
            check_resumable(ckpt["config"], cfg, self.latest)
            model.load_state_dict(ckpt, self.latest)
            del ckpt
            if self.rank == 0:
                drop_metrics_after(self.out / "metrics.jsonl", model.step)
        elif self.rank == 0 and (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()  # a fresh run in an old folder starts a fresh log
        if self.rank == 0:
            cfg.save(self.out / "config.yaml")
            self.metrics = open(self.out / "metrics.jsonl", "a")
        self.done = {"ckpt": model.step, "eval": model.step}
        return model.step

    def log(self, model: CUTModel, pending, lr: float, elapsed: float, since_log: float, world: int) -> dict:
        """The mean losses since the last line (every rank: the check and the mean are collective)."""
        bad = first_nonfinite(pending)  # losses are read back only here: no host sync inside the step
        if all_ranks_any(bad is not None, model.device, world):
            where = f"loss '{bad[1]}' became non-finite at step {bad[0]}" if bad else \
                "a loss became non-finite on another rank"
            raise NonFiniteLossError(f"{where}{f' (rank {self.rank})' if world > 1 else ''}; training stopped. "
                                     f"The last good checkpoint ({self.latest}) was left as it was. Try a lower "
                                     f"lr, amp='off', or grad clipping.")
        means = rank_mean(torch.stack([torch.stack([v[k] for _, v in pending]).float().mean()
                                       for k in LOSS_KEYS]), world).tolist()
        b = self.cfg.batch_size * world
        rec = {"step": model.step, "time": round(elapsed, 3), "lr": lr, "batch": b,
               "images_per_s": round(len(pending) * b / max(since_log, 1e-9), 3),
               **dict(zip(LOSS_KEYS, means)), **{f"skipped_{k}": v for k, v in model.skipped.items()}}
        self.write(rec)
        return rec

    @property
    def stop_seconds(self) -> float:
        """What a stop may still write: a checkpoint and an evaluation, at their last measured times."""
        return self.seconds["ckpt"] + self.seconds["eval"]

    def _due(self, what: str, every: int, step: int, final: bool) -> bool:
        return self.done.get(what) != step and (final or bool(every and step % every == 0))

    def periodic(self, model: CUTModel, final: bool, t_budget: float) -> None:
        """Samples, evaluation and checkpoint when due, or all of them (once) when the run stops. The clock
        is read only for what is written (`t_budget`: its reading when the run's training time was 0)."""
        cfg, step = self.cfg, model.step
        if self.rank != 0:
            return
        if self.sample_photos is not None and self._due("samples", cfg.sample_every, step, final):
            save_pairs_grid(self.sample_photos, model.translate(self.sample_photos),
                            self.out / "samples" / f"step_{step:07d}.png")
            self.done["samples"] = step
        if self.evaluator and self._due("eval", cfg.eval_every, step, final):
            t0 = self.clock()
            rec = {"step": step, "eval": True, **self.evaluator(model)}
            self.write(rec)
            self.done["eval"], self.seconds["eval"] = step, self.clock() - t0
            if rec["mifid"] < model.best["mifid"]:
                model.best = {"mifid": rec["mifid"], "step": step}
                save_checkpoint(model.state_dict(), self.ckpt_dir / "best.pt")
        if self._due("ckpt", cfg.ckpt_every, step, final):
            t0 = self.clock()
            model.train_seconds = t0 - t_budget
            numbered = save_checkpoint(model.state_dict(), self.ckpt_dir / f"step_{step:07d}.pt")
            link_atomic(numbered, self.latest)
            prune_numbered(self.ckpt_dir, KEEP_CKPTS)
            self.done["ckpt"], self.seconds["ckpt"] = step, self.clock() - t0

    def write(self, rec: dict) -> None:
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        if self.on_log:
            try:
                self.on_log(rec)
            except StopNow:
                raise
            except KeyboardInterrupt:  # between steps: stop before the next one, as for a signal
                self.stop.request()

    def close(self) -> None:
        if self.metrics:
            self.metrics.close()


# ---------------------------------------------------------------------------------------------- CLI

USAGE = """usage: python -m cutlib.train [-h] [-f FILE.yaml] [--FIELD VALUE ...]   DDP: torchrun --nproc_per_node N -m cutlib.train ...
Trains CUT, photo -> Monet, into <out_dir>/{config.yaml, metrics.jsonl, ckpt/, samples/}; prints a JSON summary.
-f reads a params file (its notebook-only keys ignored); each --FIELD VALUE after it overrides one, read as YAML.
Progress: a bar on a terminal, else a line every CUTLIB_PROGRESS_EVERY_S s (30); CUTLIB_PROGRESS=bar|lines|off."""


def cli_help() -> str:
    """--help: the usage, then every TrainConfig field with its type, default and help, its group's name
    beside the first (one line a field)."""
    import dataclasses

    from .config import field_groups, field_help

    helps, defaults = field_help(), TrainConfig().to_dict()
    types = {f.name: str(f.type).replace("<class '", "").rstrip("'>") for f in dataclasses.fields(TrainConfig)}
    lines = [USAGE]
    for group, names in field_groups():
        for i, name in enumerate(names):
            value = defaults[name]
            shown = ",".join(map(str, value)) if isinstance(value, list) else repr(value) if value == "" else value
            typ = "LIST" if types[name] == "tuple" else types[name].upper()
            lines.append(f"{group if i == 0 else '':<9} --{name} {typ}".ljust(38) + f" {helps[name]} (default: {shown})")
    return "\n".join(lines)


def parse_cli(argv: list[str]) -> TrainConfig:
    """`-f file.yaml` then `--field value` overrides (values parsed as YAML scalars)."""
    import yaml

    from .nbbuild import training_fields

    d: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-f", "--file"):
            if i + 1 >= len(argv):
                raise ConfigError(f"{a} needs a YAML file")
            d.update(training_fields(argv[i + 1]))
            i += 2
        elif a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"--{key} needs a value")
                val, i = argv[i + 1], i + 1
            d[key] = yaml.safe_load(val) if val.strip() else ""  # --diffaug '' means the empty string
            i += 1
        else:
            raise ConfigError(f"unexpected argument {a!r}; use -f FILE.yaml and --field value")
    return TrainConfig.from_dict(d)


def main(argv=None) -> int:
    """Also the torchrun entry point: `torchrun --nproc_per_node N -m cutlib.train -f params/x.yaml`."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(cli_help())
        return EXIT_OK
    rank = 0
    try:
        cfg = parse_cli(argv)
        if distributed and not torch.distributed.is_initialized():
            backend = "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        rank = rank_world()[0]
        summary = train(cfg)
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except TrainingInterrupted as e:
        if rank_world()[0] == 0:
            print(json.dumps(e.summary))  # the launcher (cutlib.launch) reads this line
            print(f"train: {e}", file=sys.stderr, flush=True)
        return e.exit_status
    except StopNow as e:
        print(f"train: {e}; the last complete checkpoint is {Path(cfg.out_dir) / 'ckpt' / 'latest.pt'}",
              file=sys.stderr, flush=True)
        return exit_status(e.signum)
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(json.dumps(summary))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
