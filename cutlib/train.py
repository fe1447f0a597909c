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
from .config import ConfigError, TrainConfig
from .data import UnpairedDataset, eval_image, make_demo_data, scan_images
from .distributed import (all_ranks_any, barrier, broadcast_from_rank0, control_group, max_over_ranks, rank_mean,
                          rank_world)
from .hardware import resolve_amp, resolve_device
from .jobs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, USAGE_ERRORS
from .model import LOSS_KEYS, CUTModel
from .progress import TrainProgress, progress_style
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


ARCH_FIELDS = ("ngf", "ndf", "n_blocks", "g_block", "antialias", "centred_resampling", "backbone_antialias", "residual_output",
               "discriminator", "nce_layers", "image_size")


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
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    resolve_amp(cfg.amp, device)  # every parameter error before any work
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    # rank 0 alone makes demo data and decodes every file once; the others get its lists
    photos, monets, n_skipped = broadcast_from_rank0(prepare_data(cfg) if rank == 0 else None, world)
    out = Path(cfg.out_dir)
    ckpt_dir = out / "ckpt"
    latest = ckpt_dir / "latest.pt"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        for stale in ckpt_dir.glob(".*.tmp"):  # a write a killed run never finished
            stale.unlink(missing_ok=True)

    model = CUTModel(cfg, device)
    if cfg.resume and latest.exists():
        ckpt = load_checkpoint(latest, map_location=device)
        check_resumable(ckpt["config"], cfg, latest)
        model.load_state_dict(ckpt, latest)
        del ckpt
        if rank == 0:
            drop_metrics_after(out / "metrics.jsonl", model.step)
    elif rank == 0 and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run in an old folder starts a fresh log
    if rank == 0:
        cfg.save(out / "config.yaml")
    start = model.step
    # The budget and the time lr schedule count the run's training time, every resume together: the clock
    # reading at which a run never stopped would have started (under the notebook launcher, when 02
    # launched torchrun). A resumed cpu.yaml run goes on annealing where it stopped and ends on the same
    # total budget; a larger time_budget_hours on resume extends it.
    t_budget = budget_origin(t_start) - model.train_seconds
    b = cfg.batch_size
    # Global sample k = (step * world + rank) * batch + i: each rank its own shard of the same stream,
    # and one process with world * batch images per step sees exactly the same samples.
    indices = [(s * world + rank) * b + i for s in range(start, cfg.steps) for i in range(b)]
    dataset = UnpairedDataset(photos, monets, cfg.image_size, cfg.load_size, cfg.flip, cfg.seed,
                              cfg.steps * b * world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=b, sampler=indices, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed))  # its own: iterators must not draw from the global RNG
    # the sample grids' rows: photos of strong, different colours (does a sunset keep its orange?)
    sample_photos = torch.stack([eval_image(p, cfg.image_size) for p in colour_panel(photos, 4)]) \
        if rank == 0 and cfg.sample_every else None

    def checkpoint() -> float:
        t0 = clock()
        model.train_seconds = t0 - t_budget
        numbered = save_checkpoint(model.state_dict(), ckpt_dir / f"step_{model.step:07d}.pt")
        link_atomic(numbered, latest)
        prune_numbered(ckpt_dir, cfg.keep_ckpts)
        return clock() - t0

    def write_samples():
        fakes = model.translate(sample_photos)
        save_pairs_grid(sample_photos, fakes, out / "samples" / f"step_{model.step:07d}.png")

    def check_finite(pending):
        bad = first_nonfinite(pending)
        if all_ranks_any(bad is not None, device, world):
            where = f"loss '{bad[1]}' became non-finite at step {bad[0]}" if bad else \
                "a loss became non-finite on another rank"
            raise NonFiniteLossError(f"{where}{f' (rank {rank})' if world > 1 else ''}; training stopped. The "
                                     f"last good checkpoint ({latest}) was left as it was. Try a lower lr, "
                                     f"amp='off', or grad clipping.")

    def notify(rec):
        if on_log:
            try:
                on_log(rec)
            except StopNow:
                raise
            except KeyboardInterrupt:  # between steps: stop after the next one, as for a signal
                stop.request()

    evaluator = Evaluator(cfg, photos, device) if cfg.eval_every and rank == 0 else None
    ctl = control_group(world)
    stop_signal = 0
    pending: list[tuple[int, dict]] = []
    t_log, steps_since_log, budget_spent = clock(), 0, False
    ckpt_seconds, t_prev, lr = 0.0, clock(), cfg.lr
    # a live bar where a person watches, a line every progress_every_s where output is stored (papermill, logs)
    shown = TrainProgress(start, cfg.steps, t_budget, t_prev, cfg.time_budget_hours * 3600,
                          progress_style() if progress and rank == 0 else "off", cfg.progress_every_s)
    metrics_file = open(out / "metrics.jsonl", "a") if rank == 0 else None
    try:
        for photo, monet in loader:
            # Stop while one more (worst-case) step plus a checkpoint still fits in the budget; checked
            # before the step, so a resumed run whose budget is spent trains no step (a fresh run trains one).
            if cfg.time_budget_hours and model.step and all_ranks_any(
                    cfg.time_budget_hours * 3600 - (clock() - t_budget)
                    < 2 * model.step_seconds_max + 2 * ckpt_seconds + 1.0,
                    device, world):
                budget_spent = True
                break
            lr = model.set_lr(lr_factor_at(model.step, clock() - t_budget, cfg))
            pending.append((model.step, model.train_step(photo, monet)))
            steps_since_log += 1
            now = clock()
            shown.update(model.step, now)
            model.step_seconds_max = max(model.step_seconds_max * 0.99, now - t_prev)  # slow-decaying worst case
            t_prev = now
            is_last = model.step >= (until_step or cfg.steps)
            # every rank stops at the same step: the largest signal number any rank has seen (0: none)
            stop_signal = max_over_ranks(stop.signum or 0, world, ctl) if not is_last else 0
            is_last = is_last or stop_signal > 0
            due_ckpt = model.step % cfg.ckpt_every == 0 or is_last
            if model.step % cfg.log_every == 0 or due_ckpt or is_last:
                check_finite(pending)  # losses are read back only here: no host sync inside the step
                means = rank_mean(torch.stack([torch.stack([v[k] for _, v in pending]).float().mean()
                                                for k in LOSS_KEYS]), world).tolist()
                rec = {"step": model.step, "time": round(now - t_start, 3), "lr": lr, "batch": b * world,
                       "images_per_s": round(steps_since_log * b * world / max(now - t_log, 1e-9), 3),
                       **dict(zip(LOSS_KEYS, means)), **{f"skipped_{k}": v for k, v in model.skipped.items()}}
                if metrics_file:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    notify(rec)
                shown.losses(rec)
                pending, steps_since_log, t_log = [], 0, clock()
            if rank == 0:
                if cfg.sample_every and model.step % cfg.sample_every == 0:
                    write_samples()
                if evaluator and (model.step % cfg.eval_every == 0 or is_last):
                    rec = {"step": model.step, "eval": True, **evaluator(model)}
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    notify(rec)
                    if rec["mifid"] < model.best["mifid"]:
                        model.best = {"mifid": rec["mifid"], "step": model.step}
                        save_checkpoint(model.state_dict(), ckpt_dir / "best.pt")
                if due_ckpt:
                    ckpt_seconds = checkpoint()
            if is_last:
                break
    finally:
        shown.close(t_prev)
        if metrics_file:
            metrics_file.close()
    if budget_spent:
        check_finite(pending)
        if rank == 0 and not (ckpt_dir / f"step_{model.step:07d}.pt").exists():
            checkpoint()
    if rank == 0 and cfg.sample_every:
        write_samples()
    barrier(world, model.device)  # nobody leaves before rank 0 has written its checkpoint
    stop_reason = ("signal" if stop_signal else "time_budget" if budget_spent
                   else "until_step" if model.step < cfg.steps else "steps")
    summary = {"out_dir": str(out), "start_step": start, "step": model.step, "stop_reason": stop_reason,
               "seconds": round(clock() - t_start, 2), "skipped_images": n_skipped,
               "skipped_steps": dict(model.skipped), "device": str(device), "world_size": world,
               "amp": str(model.amp_dtype).replace("torch.", "") if model.amp_dtype else "off",
               "cuda_graph": model.graphs is not None and not model.graphs.failed}
    if stop_signal:
        summary["signal"] = signal_name(stop_signal)
        raise TrainingInterrupted(
            f"{signal_name(stop_signal)}: stopped after step {model.step:,} of {cfg.steps:,}; checkpoint {latest} "
            f"written. Resume: {resume_command(cfg)} (in a notebook: resume=True)", model.step, str(latest),
            stop_signal, summary)
    return summary


# ---------------------------------------------------------------------------------------------- CLI

USAGE = """usage: python -m cutlib.train [-h] [-f FILE.yaml] [--FIELD VALUE | --FIELD=VALUE ...]
       torchrun --nproc_per_node N -m cutlib.train -f FILE.yaml ...   (DDP: one process per GPU)

Trains CUT, photo -> Monet. Writes <out_dir>/{config.yaml, metrics.jsonl, ckpt/, samples/}, then prints a
JSON summary. -f reads fields from a YAML file (params/*.yaml); each --FIELD VALUE after it overrides one,
the value read as YAML (--steps 2000  --nce_layers 0,4,8  --diffaug ''  --resume true). Keys a params file
holds for the notebooks alone are ignored here: nproc (02's launcher; here, run under torchrun) and 03's
run_dir, checkpoint, zip_path and the other generation keys.
Progress: a live bar on a terminal; one line every progress_every_s seconds when the output goes to a file
or a pipe (CUTLIB_PROGRESS=bar|lines|off chooses). With time_budget_hours, against the budget."""


def cli_help() -> str:
    """--help: the usage, then every TrainConfig field with its type, default and help, in its groups."""
    import dataclasses

    from .config import field_groups, field_help

    helps, defaults = field_help(), TrainConfig().to_dict()
    types = {f.name: str(f.type).replace("<class '", "").rstrip("'>") for f in dataclasses.fields(TrainConfig)}
    lines = [USAGE]
    for group, names in field_groups():
        lines.append(f"\n{group}:")
        for name in names:
            value = defaults[name]
            shown = ",".join(map(str, value)) if isinstance(value, list) else repr(value) if value == "" else value
            typ = "LIST" if types[name] == "tuple" else types[name].upper()
            lines.append(f"  --{name} {typ:<6}".ljust(30) + f" {helps[name]} (default: {shown})")
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
