"""Image folders, robust decoding, a resumable unpaired sampler, and built-in procedural demo data."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageFilter, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
Image.MAX_IMAGE_PIXELS = 8192 * 8192  # refuse decompression bombs with a clear PIL error, not an OOM


class DataError(ValueError):
    """A data folder that cannot be used; the message names it."""


def list_images(folder: str | os.PathLike, what: str = "image folder") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise DataError(f"{what} {folder} holds no .jpg/.jpeg/.png images")
    return files


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any image PIL reads into 8-bit RGB, EXIF orientation applied. Raises OSError/ValueError
    (naming the file) when it cannot be decoded completely."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey half-image
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG: scale to 8 bits, don't clip
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255, 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                bg = Image.new("RGB", im.size, (255, 255, 255))
                rgba = im.convert("RGBA")
                bg.paste(rgba, mask=rgba.getchannel("A"))
                return bg
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise OSError(f"cannot decode image {path}: {e}") from e


def _decodes(path: Path) -> str | None:
    try:
        load_rgb(path)
        return None
    except Exception as e:  # noqa: BLE001 - any reason a file is unreadable is a reason to skip it
        return str(e)


def scan_images(folder: str | os.PathLike, what: str = "image folder") -> tuple[list[Path], list[Path]]:
    """(usable, skipped): every file is decoded once, up front (a truncated JPEG only fails on a full
    decode); each one that fails is skipped with one warning naming it."""
    from concurrent.futures import ThreadPoolExecutor

    files = list_images(folder, what)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        errors = list(pool.map(_decodes, files))
    usable, skipped = [], []
    for p, err in zip(files, errors):
        if err is None:
            usable.append(p)
        else:
            warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
            skipped.append(p)
    if not usable:
        raise DataError(f"{what} {folder} has no usable image ({len(skipped)} unreadable)")
    return usable, skipped


def to_uint8_chw(im: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL -> uint8 CHW tensor, the form torchvision's transforms work on."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 CHW -> size x size, bicubic, antialiased: torchvision's uint8 filter is PIL's (a = -0.5;
    within 2 levels of PIL's result). Imported here: torchvision adds ~1.3 s to every process's start-up,
    which --help, evaluation and the ranks' launch need not pay."""
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)


def to_tensor(im: Image.Image | torch.Tensor) -> torch.Tensor:
    """8-bit RGB PIL or uint8 CHW -> float CHW in [-1, 1]."""
    x = im if isinstance(im, torch.Tensor) else to_uint8_chw(im)
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B)CHW in [-1, 1] -> uint8 (B)HWC."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class UnpairedDataset(torch.utils.data.Dataset):
    """Sample k of the training stream -> (photo, painting), a pure function of (seed, k).

    Why index by global sample number instead of shuffling in a DataLoader: resuming at step t is then
    exact by construction (start the stream at t * batch), with any number of workers or ranks."""

    def __init__(self, photos: list[Path], monets: list[Path], image_size: int, load_size: int,
                 flip: bool, seed: int, length: int):
        self.domains = (photos, monets)
        self.image_size, self.load_size, self.flip = image_size, load_size, flip
        self.seed, self.length = seed, length
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}  # domain -> (epoch, permutation)

    def __len__(self):
        return self.length

    def _file(self, domain: int, k: int) -> int:
        n = len(self.domains[domain])
        epoch = k // n
        cached = self._perm_cache.get(domain)
        if cached is None or cached[0] != epoch:  # each epoch its own shuffle, both domains independently
            cached = self._perm_cache[domain] = (epoch, np.random.default_rng([self.seed, domain, epoch]).permutation(n))
        return int(cached[1][k % n])

    def _load(self, domain: int, k: int) -> torch.Tensor:
        files = self.domains[domain]
        idx = self._file(domain, k)
        for attempt in range(len(files)):
            path = files[(idx + attempt) % len(files)]
            try:
                im = load_rgb(path)
                break
            except OSError as e:  # a file broken after the scan: warn, use the next one, keep training
                warnings.warn(f"skipping image during training: {e}", stacklevel=2)
        else:
            raise DataError(f"no image of {Path(files[0]).parent} could be decoded")
        rng = np.random.default_rng([self.seed, domain, k, 7])
        return to_tensor(random_crop_flip(im, self.load_size, self.image_size, self.flip, rng))

    def __getitem__(self, k: int):
        return self._load(0, k), self._load(1, k)


def random_crop_flip(im: Image.Image, load_size: int, size: int, flip: bool, rng) -> torch.Tensor:
    """Resize to load_size, take a random size x size crop, flip half of them: uint8 CHW."""
    x = resize_square(to_uint8_chw(im), load_size)
    left, top = rng.integers(0, load_size - size + 1, size=2)
    x = x[:, int(top):int(top) + size, int(left):int(left) + size]
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    return x


def eval_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Deterministic view of an image for sampling and generation: RGB, resized to size x size."""
    x = to_uint8_chw(load_rgb(path))
    if x.shape[-2:] != (size, size):
        x = resize_square(x, size)
    return to_tensor(x)


# --------------------------------------------------------------------------------------------------
# Built-in demo data: procedural landscapes, and "paintings" made from other landscapes by a fixed
# painterly transform. Small, deterministic, no download; good enough to exercise every code path.
# --------------------------------------------------------------------------------------------------

def _landscape(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    sky_top, sky_bottom = rng.uniform(0.3, 1.0, 3), rng.uniform(0.5, 1.0, 3)
    img = sky_top[None, None] * (1 - yy[..., None]) + sky_bottom[None, None] * yy[..., None]
    # sun or moon
    cy, cx, r = rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.1)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
    img[disc] = rng.uniform(0.8, 1.0, 3)
    horizon = rng.uniform(0.45, 0.7)
    # hills: a few sine ridges, each nearer one darker
    for i in range(rng.integers(1, 4)):
        f, ph, amp = rng.uniform(2, 8), rng.uniform(0, 6.3), rng.uniform(0.03, 0.12)
        ridge = horizon - 0.1 * (2 - i) + amp * np.sin(f * xx * np.pi + ph)
        col = rng.uniform(0.05, 0.6, 3) * (0.6 + 0.2 * i)
        img[yy > ridge] = col
    # water below the horizon: the sky mirrored, darkened, with ripples
    if rng.random() < 0.6:
        water = yy > horizon + 0.1
        src = np.clip((2 * (horizon + 0.1) - yy) * size, 0, size - 1).astype(int)
        ripple = 0.08 * np.sin(60 * yy + 8 * np.sin(10 * xx))
        mirrored = img[src, (xx * size).astype(int)] * 0.7 + ripple[..., None]
        img[water] = mirrored[water]
    img += rng.normal(0, 0.03, img.shape)  # film-like texture
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _painterly(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Palette shift toward warm pastels, smoothing, and short brush strokes of local colour."""
    x = arr.astype(np.float32) / 255
    x = 0.65 * x + 0.35 * np.array([0.85, 0.75, 0.55])  # pastel, warm
    x[..., 2] += 0.08 * (1 - x[..., 2])  # Monet's violet-blue shadows
    im = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    out = np.asarray(im).copy()
    size = out.shape[0]
    n = size * size // 40
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    lengths, angles = rng.integers(2, 7, n), rng.uniform(0, np.pi, n)
    for y, x0, length, a in zip(ys, xs, lengths, angles):
        c = out[y, x0].astype(np.int16) + rng.integers(-12, 13, 3)
        for t in range(length):
            yy, xx = int(y + t * np.sin(a)), int(x0 + t * np.cos(a))
            if 0 <= yy < size - 1 and 0 <= xx < size - 1:
                out[yy:yy + 2, xx:xx + 2] = np.clip(c, 0, 255)
    return out


DEMO_PHOTOS = 200  # the built-in demo's photo count: its zip window (cutlib.generate) follows it


def make_demo_data(root: str | os.PathLike, n_photos: int = DEMO_PHOTOS, n_paintings: int = 60,
                   size: int = 256, seed: int = 0) -> Path:
    """Write <root>/photo_jpg and <root>/monet_jpg like Kaggle's layout. Reuses a complete earlier copy."""
    root = Path(root)
    stamp = root / f".demo-{n_photos}-{n_paintings}-{size}-{seed}"
    if stamp.exists():
        return root
    for sub, n, painterly, offset in (("photo_jpg", n_photos, False, 0), ("monet_jpg", n_paintings, True, 10**6)):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, offset + i])  # paintings come from other scenes than photos
            arr = _landscape(rng, size)
            if painterly:
                arr = _painterly(arr, rng)
            Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=92)
    stamp.touch()
    return root


def default_demo_root() -> Path:
    return Path(os.environ.get("CUTLIB_DEMO_DIR", Path.home() / ".cache" / "cutlib" / "demo"))
