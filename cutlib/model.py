"""The CUT model and its training step: one D step, one G+MLP step and the EMA update.

The same step runs eagerly or is replayed from a CUDA graph (cutlib.graphs), so nothing in it reads a
Python value that changes from step to step: the learning rate, the identity-L1 weight and the EMA
weight are device tensors filled before the step runs; patch locations come from the model's own
generator (saved in checkpoints); the few host-side choices that change what the step computes (the
paintings through G, the FastCUT flip) form a StepPlan, and each plan is its own graph."""
from __future__ import annotations

import math
import random
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.utils import clip_grad_norm_

from . import losses
from .augment import diff_augment
from .checkpoint import load_weights
from .config import ADAM_BETAS, GRAD_CLIP, NCE_T, TrainConfig
from .discriminators import adversarial_weights, build_discriminators
from .distributed import rank_world
from .ema import EMA, ema_beta
from .graphs import CaptureFailed, StepGraphs
from .hardware import keep_freed_cpu_memory, resolve_amp, resolve_cuda_graph
from .nets import PatchSampleMLP, build_generator, init_weights, tap_channels
from .painting import paint
from .projection import frozen_lite0

LOSS_KEYS = ("d_loss", "g_loss", "g_adv", "nce", "identity", "lattice")  # what _step returns, in log order


def uses_backbone(cfg: TrainConfig) -> bool:
    return "projected" in cfg.discriminator


def build_networks(cfg: TrainConfig):
    """(G, D, the PatchNCE MLP, the frozen EfficientNet-Lite0 or None). The backbone is loaded with the
    global RNG set aside (its modules' default init draws from it before the weights replace them), so
    G, D and the MLP start from the same weights with or without it."""
    backbone = None
    if uses_backbone(cfg):
        with torch.random.fork_rng(devices=[]):
            backbone = frozen_lite0(cfg.backbone_weights)
    G = build_generator(cfg)
    D = build_discriminators(cfg, backbone)
    mlp = init_weights(PatchSampleMLP(tap_channels(cfg.ngf, cfg.nce_layers)))
    return G, D, mlp, backbone


def no_forward_buffer_sync() -> dict:
    """DDP's argument for "no buffer broadcast at each forward": `forward_sync_buffers=False` where torch
    has it (2.13+, which warns that `broadcast_buffers` is deprecated), `broadcast_buffers=False` before."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class StepPlan(NamedTuple):
    """The host-side choices that change what a step computes, and so which graph replays it."""
    with_monet: bool  # the paintings go through G (NCE identity, or the identity-L1 warm-up)
    flipped: bool  # FastCUT's flip-equivariance draw


class CUTModel:
    """Networks, optimizers, scalers and EMA, with `train_step`. Everything a checkpoint holds."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu", amp_dtype: torch.dtype | None | str = "cfg"):
        self.cfg, self.device = cfg, torch.device(device)
        # the training loop resolves AMP once and hands it down; elsewhere (benchmarks, tests) it is cfg.amp's
        self.amp_dtype = resolve_amp(cfg.amp, self.device) if amp_dtype == "cfg" else amp_dtype
        self.rank, self.world = rank_world()
        cuda = self.device.type == "cuda"
        if not cuda:
            keep_freed_cpu_memory()
        # every global RNG a checkpoint saves starts from the seed, so a resumed run's equal an unbroken one's
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        G, D, F, backbone = build_networks(cfg)
        self.G, self.D, self.F = G.to(self.device), D.to(self.device), F.to(self.device)
        self.backbone = backbone.to(self.device) if backbone is not None else None
        self.adv_weights = adversarial_weights(cfg, self.D.names)
        self.ema = EMA(self.G)
        # The modules that take part in backward; under torchrun they are DDP wrappers of the same nets.
        self.G_train, self.D_train, self.F_train = self.G, self.D, self.F
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if cuda else None
            self.G_train, self.F_train = (DDP(m, device_ids=ids) for m in (self.G, self.F))
            # D's buffers need no broadcast before each forward: the projected D's frozen backbone is
            # identical on every rank, and its spectral-norm vectors follow the all-reduced weights identically
            self.D_train = DDP(self.D, device_ids=ids, **no_forward_buffer_sync())
            torch.manual_seed(cfg.seed + 7919 * self.rank)  # own DiffAugment draws per rank
        if cfg.compile:
            # G is ~3/4 of the step's FLOPs and all of its norm/pad/activation glue, which is what a
            # compiler can fuse; D and the MLP stay eager (D switches requires_grad every step)
            self.G_train = torch.compile(self.G_train)
        # Per-step scalars as device tensors: a replayed graph reads them when it runs. The lr tensor is
        # shared by the three optimizers (fused Adam takes a tensor lr); on CPU it stays a float.
        self.lr = torch.tensor(cfg.lr, device=self.device) if cuda else cfg.lr
        self.w_identity = torch.zeros((), device=self.device)
        self.ema_weight = torch.zeros((), device=self.device)
        # Patch locations and FastCUT flips come from generators seeded alike on every DDP rank (two ranks
        # draw what one process with their global batch draws), saved with checkpoints for exact resume.
        self.patch_gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.flip_gen = torch.Generator().manual_seed(cfg.seed)
        adam = dict(lr=self.lr, betas=ADAM_BETAS, **self._adam_flags())
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
        # The time budget's state, kept across resumes: training time spent up to `step`, and the slowly
        # decaying worst step time the budget keeps in reserve (a resumed run decides to stop as the
        # unbroken one would).
        self.train_seconds, self.step_seconds_max = 0.0, 0.0
        self.step = 0
        self.graphs = None
        if resolve_cuda_graph(cfg.cuda_graph, self.device, self.world):
            self.graphs = StepGraphs(self._step, generators=[self.patch_gen])

    def _adam_flags(self) -> dict:
        # fused: one kernel per optimizer step; capturable: its step counters stay on the GPU (graphs)
        return {"fused": True, "capturable": True} if self.device.type == "cuda" else {}

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        # autocast's weight-cast cache must not outlive a graph capture; a replay recasts anyway
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=self.graphs is None)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def _clip_and_step(self, opts, scaler, which: str) -> None:
        """Unscale, clip, and step each optimizer unless its gradient is non-finite (then count a skip of
        the first, the network's). Each optimizer clips its own gradients: one norm shared by G and the MLP
        carried G's NaN into the MLP's gradients after GradScaler had found them finite, and the MLP then
        stepped on NaN (fp16, the first steps of a residual_output G). Under DDP the gradients are
        already averaged, so every rank takes the same decision."""
        for opt in opts:
            scaler.unscale_(opt)
        for i, opt in enumerate(opts):
            norm = clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
            if i == 0:
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
        if isinstance(self.lr, torch.Tensor):
            self.lr.fill_(lr)  # every optimizer holds this tensor
        else:
            for opt in (self.opt_G, self.opt_D, self.opt_F):
                for group in opt.param_groups:
                    group["lr"] = lr
        return lr

    def patch_nce(self, q_feats, k_feats, halves: int) -> torch.Tensor:
        """PatchNCE averaged over taps, for each of `halves` equal batch parts (photo->fake and, with NCE
        identity, monet->G(monet)), then over the parts. Keys are the source's encoder taps through the
        MLP without autograd (PatchNCE detaches them anyway); queries go through the (DDP) MLP once."""
        ids = PatchSampleMLP.sample_ids(k_feats, self.cfg.num_patches, self.patch_gen)
        with torch.no_grad():
            keys = self.F([k.detach() for k in k_feats], ids)
        queries = self.F_train(q_feats, ids)
        n = q_feats[0].shape[0] // halves
        parts = [torch.stack([losses.patch_nce(q[i * n:(i + 1) * n], k[i * n:(i + 1) * n], NCE_T)
                              for q, k in zip(queries, keys)]).mean() for i in range(halves)]
        return torch.stack(parts).mean()

    def plan(self) -> StepPlan:
        """This step's host-side choices (draws the FastCUT flip: call once per step)."""
        cfg = self.cfg
        w_idt = losses.identity_weight(self.step, cfg.lambda_identity, cfg.identity_warmup)
        flipped = cfg.flip_equivariance and bool(torch.rand((), generator=self.flip_gen) < 0.5)
        return StepPlan(with_monet=cfg.nce_idt or w_idt > 0, flipped=flipped)

    def train_step(self, photo: torch.Tensor, monet: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, b = self.cfg, photo.shape[0]
        plan = self.plan()
        self.w_identity.fill_(losses.identity_weight(self.step, cfg.lambda_identity, cfg.identity_warmup))
        images = (self.step + 1) * b * self.world
        self.ema_weight.fill_(1.0 - ema_beta(images, b * self.world, cfg.ema_halflife_kimg))
        if self.graphs is not None:
            try:
                out = self.graphs.run(plan, photo, monet)
            except CaptureFailed:
                self._forget_failed_capture()
                out = self.graphs.run(plan, photo, monet)  # eagerly from now on
        else:
            out = self._step(self._prep(photo), self._prep(monet), plan)
        self.step += 1
        return out

    def _forget_failed_capture(self) -> None:
        """A capture that failed part-way left Python-side step state behind (the scalers think they
        unscaled, D's requires_grad flipped); start the step over from clean state."""
        for name in ("scaler_G", "scaler_D"):
            fresh = torch.amp.GradScaler(self.device.type)
            fresh.load_state_dict(getattr(self, name).state_dict())
            setattr(self, name, fresh)
        for opt in (self.opt_G, self.opt_D, self.opt_F):
            opt.zero_grad(set_to_none=True)
        self.D.requires_grad_(True)

    def _step(self, photo: torch.Tensor, monet: torch.Tensor, plan: StepPlan) -> dict[str, torch.Tensor]:
        """One D step and one G+MLP step on device tensors; returns the LOSS_KEYS losses, detached."""
        cfg = self.cfg
        b = photo.shape[0]
        real = torch.cat([photo, monet]) if plan.with_monet else photo
        if plan.flipped:
            real = real.flip(3)
        taps = cfg.nce_layers
        n_q = 2 * b if cfg.nce_idt else b

        # One generator call gives the fakes, the source taps (PatchNCE keys, never recomputed) and the
        # fakes' taps (queries); its graph serves the adversarial, NCE and identity terms.
        with self.autocast():
            out, src_feats, q_feats = self.G_train(real, taps=taps, reencode=n_q)
        if plan.flipped:  # FastCUT: keys from the unflipped source, queries flipped back (as official CUT)
            out = out.flip(3)
            q_feats = [f.flip(3) for f in q_feats]
            with torch.no_grad(), self.autocast():
                src_feats = self.G.encode(real.flip(3), taps)
        fake, idt = out[:b], out[b:]

        # --- D step: real and fake in one call (instance norm keeps samples independent) ---
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            # every discriminator sees the same augmented images and trains on its own loss (their sum)
            logits = self.D_train(diff_augment(torch.cat([monet, fake.detach()]), cfg.diffaug))
            d_loss = sum(losses.d_loss(cfg.gan_loss, x[:b], x[b:]) for x in logits)
        self.scaler_D.scale(d_loss).backward()
        self._clip_and_step([self.opt_D], self.scaler_D, "d")

        # --- G + MLP step (D frozen and unwrapped: no weight gradients for it) ---
        self.D.requires_grad_(False)
        zero = torch.zeros((), device=self.device)
        with self.autocast():
            logits = self.D(diff_augment(fake, cfg.diffaug))
            g_adv = sum(w * losses.g_adv_loss(cfg.gan_loss, x) for w, x in zip(self.adv_weights, logits))
            nce = self.patch_nce(q_feats, [f[:n_q] for f in src_feats], 2 if cfg.nce_idt else 1)
            identity = losses.identity_l1(idt, monet) if plan.with_monet else zero
            # the lattice the projected D pays G for (docs/recipes.md)
            lattice = losses.lattice_excess(fake, photo) if cfg.lambda_lattice > 0 else zero
            g_loss = (cfg.lambda_gan * g_adv + cfg.lambda_nce * nce + self.w_identity * identity
                      + cfg.lambda_lattice * lattice)
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_F.zero_grad(set_to_none=True)
        self.scaler_G.scale(g_loss).backward()
        self._clip_and_step([self.opt_G, self.opt_F], self.scaler_G, "g")
        if self.rank == 0:  # only rank 0 evaluates and saves, so only it needs the average
            self.ema.update(self.G, self.ema_weight)
        named = dict(d_loss=d_loss, g_loss=g_loss, g_adv=g_adv, nce=nce, identity=identity, lattice=lattice)
        return {k: v.detach().float() for k, v in named.items()}

    @torch.no_grad()
    def translate(self, photos: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
        G = self.ema.model if use_ema else self.G
        with self.autocast():
            return paint(G, self._prep(photos)).float()

    # --- checkpoint state ---
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()[1][:625],
               "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
               "patch": self.patch_gen.get_state(), "flip": self.flip_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step, "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "F": self.F.state_dict(),
            "ema_G": self.ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "opt_F": self.opt_F.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "skipped": dict(self.skipped), "best": dict(self.best), "rng": rng,
            "train_seconds": float(self.train_seconds), "step_seconds_max": float(self.step_seconds_max),
        }

    def load_state_dict(self, ckpt: dict, path="checkpoint") -> None:
        if "net.0.weight" in ckpt["D"]:  # saved before the discriminators got names: a bare PatchGAN
            ckpt = {**ckpt, "D": {f"patch.{k}": v for k, v in ckpt["D"].items()}}
        for name, net in (("G", self.G), ("D", self.D), ("F", self.F)):
            load_weights(net, ckpt[name], name, path)
        load_weights(self.ema.model, ckpt["ema_G"]["shadow"], "ema_G", path)
        for name in ("opt_G", "opt_D", "opt_F", "scaler_G", "scaler_D"):
            if ckpt.get(name):
                getattr(self, name).load_state_dict(ckpt[name])
        self._own_optimizer_settings()
        if self.graphs is not None:
            self.graphs.reset()  # captured graphs point at the optimizer state tensors just replaced
        self.step = int(ckpt["step"])
        self.skipped = dict(ckpt.get("skipped", self.skipped))
        self.best = dict(ckpt.get("best", self.best))
        # older checkpoints kept no time: their budget starts anew
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.step_seconds_max = float(ckpt.get("step_seconds_max", 0.0))
        rng = ckpt.get("rng", {})
        # RNG states are CPU byte tensors, whatever map_location moved the checkpoint to
        rng = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in rng.items()}
        for key, gen in (("patch", self.patch_gen), ("flip", self.flip_gen)):
            if key in rng:
                gen.set_state(rng[key])
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

    def _own_optimizer_settings(self) -> None:
        """A loaded optimizer state brings the saving machine's flags (fused, capturable, a float or
        CUDA lr): put back this model's, and its shared lr tensor, so a CPU checkpoint resumes on a GPU."""
        flags = {"fused": None, "capturable": False, "foreach": None, **self._adam_flags()}
        for opt in (self.opt_G, self.opt_D, self.opt_F):
            for group in opt.param_groups:
                group.update(flags)
                group["lr"] = self.lr if isinstance(self.lr, torch.Tensor) else float(group["lr"])
            for state in opt.state.values():
                if "step" in state and self.device.type == "cuda":
                    state["step"] = state["step"].to(self.device, torch.float32)
                elif "step" in state:
                    state["step"] = state["step"].cpu().float()
