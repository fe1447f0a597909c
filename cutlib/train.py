"""CUT training: the model state with one D step + one G/MLP step, and the loop around it.

Usage:  python -m cutlib.train [-f params/smoke.yaml] [--steps 100 --out_dir runs/x ...]
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import clip_grad_norm_

from . import losses
from .augment import diff_augment
from .checkpoint import link_atomic, load_checkpoint, load_weights, prune_numbered, save_checkpoint
from .config import ConfigError, TrainConfig
from .data import UnpairedDataset, eval_image, make_demo_data, scan_images
from .ema import EMA, ema_beta
from .nets import PatchSampleMLP, build_nets
from .viz import save_pairs_grid

LOSS_KEYS = ("d_loss", "g_loss", "g_adv", "nce", "identity", "r1")


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN/inf; the last good checkpoint is left intact."""


# ---------------------------------------------------------------------------------------------- hardware

def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available; accepted here: 'auto', 'cpu'")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """autocast dtype for the mode on this device (None = full fp32)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("amp='bf16': this GPU has no bf16 support; accepted here: 'fp16', 'off', 'auto'")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def keep_freed_cpu_memory() -> None:
    """Make glibc keep large freed blocks for reuse instead of returning them to the OS.

    A CPU training step allocates and frees the same few hundred activation buffers every step; the
    large ones (>= 32 MB at 256 px) are mmap-ed by default, so every step page-faults them in afresh
    and zero-fills them: ~4% of a 256 px CPU step. A no-op where glibc's mallopt is not available."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        pass


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """Constant, then linear decay to 0 at the last step (official CUT 'linear' policy)."""
    start = int(steps * decay_start)
    if step < start or steps <= start:
        return 1.0
    return max(0.0, (steps - step) / (steps - start))


# ---------------------------------------------------------------------------------------------- model

class CUTModel:
    """Networks, optimizers, scalers and EMA, with `train_step`. Everything a checkpoint holds."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.rank, self.world = dist_rank_world()
        if self.device.type == "cpu":
            keep_freed_cpu_memory()
        torch.manual_seed(cfg.seed)
        self.G, self.D, self.F = (m.to(self.device) for m in build_nets(cfg))
        self.memory_format = (torch.channels_last if cfg.channels_last and self.device.type == "cuda"
                              else torch.contiguous_format)
        for m in (self.G, self.D):
            m.to(memory_format=self.memory_format)
        self.ema = EMA(self.G)
        # The modules that take part in backward; under torchrun they are DDP wrappers of the same nets.
        self.G_train, self.D_train, self.F_train = self.G, self.D, self.F
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train, self.D_train, self.F_train = (DDP(m, device_ids=ids) for m in (self.G, self.D, self.F))
            torch.manual_seed(cfg.seed + 7919 * self.rank)  # own DiffAugment draws per rank
        if cfg.compile:
            # G is ~3/4 of the step's FLOPs and all of its norm/pad/activation glue, which is what a
            # compiler can fuse; D and the MLP stay eager (D switches requires_grad every step)
            self.G_train = torch.compile(self.G_train)
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **({"fused": True} if self.device.type == "cuda" else {}))
        self.opt_G = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **adam)
        self.opt_F = torch.optim.Adam(self.F.parameters(), **adam)
        # GradScalers do the non-finite-gradient skip for every AMP mode: unscale_ finds inf/NaN on the
        # device and the optimizer step is skipped there (fused Adam takes the flag), with no host sync.
        # Only fp16 needs real loss scaling; otherwise the scale is pinned at 1.0 (an exact no-op).
        self.loss_scaling = self.amp_dtype == torch.float16
        init_scale = 2.0 ** 16 if self.loss_scaling else 1.0
        self.scaler_G = torch.amp.GradScaler(self.device.type, init_scale=init_scale)
        self.scaler_D = torch.amp.GradScaler(self.device.type, init_scale=init_scale)
        self._skips = torch.zeros(2, dtype=torch.int64, device=self.device)  # [d, g]; read at log time
        self.best = {"mifid": math.inf, "step": -1}  # best in-training evaluation so far (ckpt/best.pt)
        self.step = 0

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _step(self, opts, params, clip, scaler, which: str) -> None:
        """Unscale, clip, and step unless the gradient is non-finite (then count a skip). Under DDP the
        gradients are already averaged, so every rank takes the same decision."""
        for opt in opts:
            scaler.unscale_(opt)
        norm = clip_grad_norm_(params, clip if clip > 0 else math.inf)
        self._skips[0 if which == "d" else 1] += (~torch.isfinite(norm)).long()
        for opt in opts:
            scaler.step(opt)  # skipped when unscale_ found inf/NaN
        if self.loss_scaling:
            scaler.update()
        else:
            scaler.update(1.0)

    @property
    def skipped(self) -> dict[str, int]:
        """Optimizer steps skipped for a non-finite gradient (reading it waits for the device)."""
        d, g = self._skips.tolist()
        return {"d": d, "g": g}

    @skipped.setter
    def skipped(self, value: dict) -> None:
        self._skips.copy_(torch.tensor([value["d"], value["g"]]))

    def set_lr(self, factor: float) -> float:
        lr = self.cfg.lr * factor
        for opt in (self.opt_G, self.opt_D, self.opt_F):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def patch_nce(self, q_feats, k_feats, halves: int, rng: torch.Generator) -> torch.Tensor:
        """PatchNCE averaged over taps, for each of `halves` equal batch parts (photo->fake and, with NCE
        identity, monet->G(monet)), then over the parts. Keys are the source's encoder taps through the
        MLP without autograd (PatchNCE detaches them anyway); queries go through the (DDP) MLP once."""
        ids = PatchSampleMLP.sample_ids(k_feats, self.cfg.num_patches, rng)
        with torch.no_grad():
            keys = self.F([k.detach() for k in k_feats], ids)
        queries = self.F_train(q_feats, ids)
        n = q_feats[0].shape[0] // halves
        parts = [torch.stack([losses.patch_nce(q[i * n:(i + 1) * n], k[i * n:(i + 1) * n], self.cfg.nce_t)
                              for q, k in zip(queries, keys)]).mean() for i in range(halves)]
        return torch.stack(parts).mean()

    def train_step(self, photo: torch.Tensor, monet: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, step = self.cfg, self.step
        photo, monet = self._prep(photo), self._prep(monet)
        b = photo.shape[0]
        # Patch locations and the flip come from the step number, not the global RNG: the same on every
        # DDP rank, and a 2-process run matches a single process with the same global batch.
        step_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        patch_rng = (torch.Generator(self.device).manual_seed(cfg.seed * 1_000_003 + step)
                     if self.device.type == "cuda" else step_rng)  # ids drawn where they are used
        w_idt = losses.identity_weight(step, cfg.lambda_identity, cfg.identity_warmup)
        with_monet = cfg.nce_idt or w_idt > 0
        real = torch.cat([photo, monet]) if with_monet else photo
        flipped = cfg.flip_equivariance and bool(torch.rand((), generator=step_rng) < 0.5)
        if flipped:
            real = real.flip(3)
        taps = cfg.nce_layers
        n_q = 2 * b if cfg.nce_idt else b

        # One generator call gives the fakes, the source taps (PatchNCE keys, never recomputed) and the
        # fakes' taps (queries); its graph serves the adversarial, NCE and identity terms.
        with self.autocast():
            out, src_feats, q_feats = self.G_train(real, taps=taps, reencode=n_q)
        if flipped:  # FastCUT: keys from the unflipped source, queries flipped back (as official CUT)
            out = out.flip(3)
            q_feats = [f.flip(3) for f in q_feats]
            with torch.no_grad(), self.autocast():
                src_feats = self.G.encode(real.flip(3), taps)
        fake, idt = out[:b], out[b:]

        # --- D step: real and fake in one call (instance norm keeps samples independent) ---
        self.D.requires_grad_(True)
        aug = lambda x: diff_augment(x, cfg.diffaug)  # noqa: E731
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.D_train(aug(torch.cat([monet, fake.detach()])))
            d_loss = losses.d_loss(cfg.gan_loss, logits[:b], logits[b:])
        self.scaler_D.scale(d_loss).backward()
        r1 = torch.zeros((), device=self.device)
        if cfg.r1_weight > 0 and step % cfg.r1_every == 0:  # lazy R1: its own forward/backward, scaled
            real_in = aug(monet).detach().requires_grad_(True)
            with self.autocast():
                real_logits = self.D_train(real_in)
            r1 = losses.r1_penalty(real_logits, real_in)
            self.scaler_D.scale(0.5 * cfg.r1_weight * cfg.r1_every * r1).backward()
        self._step([self.opt_D], self.D.parameters(), cfg.grad_clip_d, self.scaler_D, "d")

        # --- G + MLP step (D frozen and unwrapped: no weight gradients for it) ---
        self.D.requires_grad_(False)
        with self.autocast():
            g_adv = losses.g_adv_loss(cfg.gan_loss, self.D(aug(fake)))
            nce = self.patch_nce(q_feats, [f[:n_q] for f in src_feats], 2 if cfg.nce_idt else 1, patch_rng)
            identity = losses.identity_l1(idt, monet) if w_idt > 0 else torch.zeros((), device=self.device)
            g_loss = cfg.lambda_gan * g_adv + cfg.lambda_nce * nce + w_idt * identity
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_F.zero_grad(set_to_none=True)
        self.scaler_G.scale(g_loss).backward()
        params = list(self.G.parameters()) + list(self.F.parameters())
        self._step([self.opt_G, self.opt_F], params, cfg.grad_clip_g, self.scaler_G, "g")

        self.step += 1
        if self.rank == 0:  # only rank 0 evaluates and saves, so only it needs the average
            self.ema.update(self.G, ema_beta(self.step * b * self.world, b * self.world, cfg.ema_halflife_kimg,
                                             cfg.ema_rampup, cfg.ema_decay))
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "g_adv": g_adv.detach(),
                "nce": nce.detach(), "identity": identity.detach(), "r1": r1.detach()}

    @torch.no_grad()
    def translate(self, photos: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
        G = self.ema.model if use_ema else self.G
        with self.autocast():
            return G(self._prep(photos)).float()

    # --- checkpoint state ---
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()[1][:625],
               "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step, "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "F": self.F.state_dict(),
            "ema_G": self.ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "opt_F": self.opt_F.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "skipped": dict(self.skipped), "best": dict(self.best), "rng": rng,
        }

    def load_state_dict(self, ckpt: dict, path="checkpoint") -> None:
        for name, net in (("G", self.G), ("D", self.D), ("F", self.F)):
            load_weights(net, ckpt[name], name, path)
        load_weights(self.ema.model, ckpt["ema_G"]["shadow"], "ema_G", path)
        for name in ("opt_G", "opt_D", "opt_F", "scaler_G", "scaler_D"):
            if ckpt.get(name):
                getattr(self, name).load_state_dict(ckpt[name])
        self.step = int(ckpt["step"])
        self.skipped = dict(ckpt.get("skipped", self.skipped))
        self.best = dict(ckpt.get("best", self.best))
        rng = ckpt.get("rng", {})
        if self.world > 1:  # one saved RNG state would give every rank the same augmentations
            torch.manual_seed(self.cfg.seed + 7919 * self.rank + 104729 * self.step)
            rng = {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "numpy" in rng:
            np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
        if "python" in rng:
            random.setstate((3, tuple(int(v) for v in rng["python"]), None))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)


# ---------------------------------------------------------------------------------------------- loop

def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def prepare_data(cfg: TrainConfig):
    """Make the demo data if asked for, then scan both folders (bad files skipped with a warning)."""
    if cfg.data == "demo" and not (cfg.photo_dir or cfg.monet_dir):
        make_demo_data(cfg.data_root)
    photos, bad_p = scan_images(cfg.photo_path, "photo folder (photo_dir)")
    monets, bad_m = scan_images(cfg.monet_path, "Monet folder (monet_dir)")
    return photos, monets, len(bad_p) + len(bad_m)


class Evaluator:
    """In-training MiFID: translate a fixed set of photos with the EMA generator (at the training size,
    upsampled to the 256 px of a submission) and score them against the Monet folder."""

    def __init__(self, cfg: TrainConfig, photos: list[Path], device: torch.device):
        from .metrics import InceptionFeatures, default_cache_dir, features_of

        self.cfg, self.device = cfg, device
        self.jobs = [(p, "") for p in photos[:cfg.eval_photos]]
        self.extractor = InceptionFeatures(cfg.fid_weights or None, device)
        self.real = features_of(cfg.monet_path, self.extractor, default_cache_dir())

    def __call__(self, model: CUTModel) -> dict:
        from .generate import translate_files
        from .metrics import scores

        t0 = time.time()
        images = (img for _, img in translate_files(model.ema.model, self.jobs, self.cfg.image_size, 256,
                                                    batch_size=8, device=self.device, amp_dtype=model.amp_dtype))
        res = scores(self.extractor(images), self.real)
        return {**{k: round(v, 6) if isinstance(v, float) else v for k, v in res.items()},
                "eval_seconds": round(time.time() - t0, 2)}


ARCH_FIELDS = ("ngf", "ndf", "n_blocks", "antialias", "residual_output", "nce_layers", "image_size")


def check_resumable(saved: dict, cfg: TrainConfig, path) -> None:
    """Resuming with another architecture or image size would silently train something else."""
    from .checkpoint import CheckpointError

    now = cfg.to_dict()
    diff = [f"{k}={saved.get(k)!r} (config: {now[k]!r})" for k in ARCH_FIELDS if saved.get(k) != now[k]]
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


def _all_ranks_any(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop together)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _rank_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        torch.distributed.all_reduce(x)
        x = x / world
    return x


def train(cfg: TrainConfig, progress: bool = True, on_log=None, until_step: int | None = None) -> dict:
    """Train per `cfg`; returns a summary dict. Writes <out_dir>/{config.yaml, metrics.jsonl, ckpt/, samples/}.

    until_step: pause after that step (checkpoint written); resume=True continues the same schedule.
    Under torchrun (an initialised process group) every rank trains on its own shard of both domains;
    rank 0 alone logs, samples, evaluates and checkpoints."""
    t_start = time.time()
    rank, world = dist_rank_world()
    device = resolve_device(cfg)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    resolve_amp(cfg.amp, device)  # every parameter error before any work
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    scanned = [prepare_data(cfg) if rank == 0 else None]
    if world > 1:  # rank 0 alone makes demo data and decodes every file once; the others get its lists
        torch.distributed.broadcast_object_list(scanned, src=0)
    photos, monets, n_skipped = scanned[0]
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
    sample_photos = torch.stack([eval_image(p, cfg.image_size) for p in photos[:4]])

    def checkpoint() -> float:
        t0 = time.time()
        numbered = save_checkpoint(model.state_dict(), ckpt_dir / f"step_{model.step:07d}.pt")
        link_atomic(numbered, latest)
        prune_numbered(ckpt_dir, cfg.keep_ckpts)
        return time.time() - t0

    def write_samples():
        fakes = model.translate(sample_photos)
        save_pairs_grid(sample_photos, fakes, out / "samples" / f"step_{model.step:07d}.png")

    def check_finite(pending):
        bad = first_nonfinite(pending)
        if _all_ranks_any(bad is not None, device, world):
            where = f"loss '{bad[1]}' became non-finite at step {bad[0]}" if bad else \
                "a loss became non-finite on another rank"
            raise NonFiniteLossError(f"{where}{f' (rank {rank})' if world > 1 else ''}; training stopped. The "
                                     f"last good checkpoint ({latest}) was left as it was. Try a lower lr, "
                                     f"amp='off', or grad clipping.")

    evaluator = Evaluator(cfg, photos, device) if cfg.eval_every and rank == 0 else None
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank > 0, desc="train", dynamic_ncols=True)
    pending: list[tuple[int, dict]] = []
    t_log, steps_since_log, stop_reason = time.time(), 0, "steps"
    step_time_max, ckpt_seconds, t_prev = 0.0, 0.0, time.time()
    metrics_file = open(out / "metrics.jsonl", "a") if rank == 0 else None
    try:
        for photo, monet in loader:
            model.set_lr(lr_factor(model.step, cfg.steps, cfg.lr_decay_start))
            pending.append((model.step, model.train_step(photo, monet)))
            steps_since_log += 1
            bar.update(1)
            now = time.time()
            step_time_max = max(step_time_max * 0.99, now - t_prev)  # slow-decaying worst case
            t_prev = now
            is_last = model.step >= (until_step or cfg.steps)
            due_ckpt = model.step % cfg.ckpt_every == 0 or is_last
            if model.step % cfg.log_every == 0 or due_ckpt or is_last:
                check_finite(pending)  # losses are read back only here: no host sync inside the step
                means = _rank_mean(torch.stack([torch.stack([v[k] for _, v in pending]).float().mean()
                                                for k in LOSS_KEYS]), world).tolist()
                rec = {"step": model.step, "time": round(now - t_start, 3), "lr": model.opt_G.param_groups[0]["lr"],
                       "images_per_s": round(steps_since_log * b * world / max(now - t_log, 1e-9), 3),
                       **dict(zip(LOSS_KEYS, means)), **{f"skipped_{k}": v for k, v in model.skipped.items()}}
                if metrics_file:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    if on_log:
                        on_log(rec)
                bar.set_postfix(d=f"{rec['d_loss']:.3f}", g=f"{rec['g_loss']:.3f}", nce=f"{rec['nce']:.3f}",
                                ips=f"{rec['images_per_s']:.2f}")
                pending, steps_since_log, t_log = [], 0, time.time()
            if rank == 0:
                if cfg.sample_every and model.step % cfg.sample_every == 0:
                    write_samples()
                if evaluator and (model.step % cfg.eval_every == 0 or is_last):
                    rec = {"step": model.step, "eval": True, **evaluator(model)}
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    if on_log:
                        on_log(rec)
                    if rec["mifid"] < model.best["mifid"]:
                        model.best = {"mifid": rec["mifid"], "step": model.step}
                        save_checkpoint(model.state_dict(), ckpt_dir / "best.pt")
                if due_ckpt:
                    ckpt_seconds = checkpoint()
            if is_last:
                break
            if cfg.time_budget_hours:
                # Stop while one more (worst-case) step plus a checkpoint still fits in the budget.
                left = cfg.time_budget_hours * 3600 - (time.time() - t_start)
                if _all_ranks_any(left < 2 * step_time_max + 2 * ckpt_seconds + 1.0, device, world):
                    stop_reason = "time_budget"
                    break
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    if stop_reason == "time_budget":
        check_finite(pending)
        if rank == 0 and not (ckpt_dir / f"step_{model.step:07d}.pt").exists():
            checkpoint()
    if rank == 0 and cfg.sample_every:
        write_samples()
    if world > 1:
        torch.distributed.barrier()  # nobody leaves before rank 0 has written its checkpoint
    if stop_reason == "steps" and model.step < cfg.steps:
        stop_reason = "until_step"
    return {"out_dir": str(out), "start_step": start, "step": model.step, "stop_reason": stop_reason,
            "seconds": round(time.time() - t_start, 2), "skipped_images": n_skipped,
            "skipped_steps": dict(model.skipped), "device": str(device), "world_size": world,
            "amp": str(model.amp_dtype).replace("torch.", "") if model.amp_dtype else "off"}


# ---------------------------------------------------------------------------------------------- CLI

def parse_cli(argv: list[str]) -> TrainConfig:
    """`-f file.yaml` then `--field value` overrides (values parsed as YAML scalars)."""
    import yaml

    from .config import load_yaml

    d: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-f", "--file"):
            from .nbbuild import GENERATE_PARAMS

            # a params file also feeds 03_generate_zip; its keys are not training fields
            generate_only = {p[0] for p in GENERATE_PARAMS} - set(TrainConfig.__dataclass_fields__)
            d.update({k: v for k, v in load_yaml(argv[i + 1]).items() if k not in generate_only})
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
    try:
        cfg = parse_cli(sys.argv[1:] if argv is None else argv)
        if distributed and not torch.distributed.is_initialized():
            backend = "nccl" if resolve_device(cfg).type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        rank = dist_rank_world()[0]
        summary = train(cfg)
    except (ConfigError, ValueError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
