"""Which device, autocast dtype and step replay this machine gets: one place for the training step, the
generation jobs and the benchmarks, so 'auto' means the same everywhere."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from .config import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when there is one), 'cpu' or 'cuda' (an error naming the choices when there is none)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available; accepted here: 'auto', 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """autocast dtype for the mode on this device (None = full fp32). 'auto': bf16 on a GPU that has it in
    hardware, else fp16; on a CPU bf16 where it has bf16 matrix instructions, else fp32."""
    if amp == "off":
        return None
    if amp == "auto" and device.type != "cuda":
        return torch.bfloat16 if device.type == "cpu" and native_cpu_bf16() else None
    if amp == "auto":
        return torch.bfloat16 if native_bf16() else torch.float16
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("amp='bf16': this GPU has no bf16 support; accepted here: 'fp16', 'off', 'auto'")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def native_bf16() -> bool:
    """bf16 in hardware: a T4 (sm_75) reports bf16 support because it can emulate it, far slower than its
    fp16 tensor cores, so 'auto' must not pick bf16 there."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument: it reports hardware support only
        return torch.cuda.is_bf16_supported()


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the x86 bf16 dot-product units


@lru_cache(maxsize=4)
def native_cpu_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16). Elsewhere oneDNN emulates
    bf16 by converting to fp32 and back, slower than fp32 itself, so 'auto' keeps fp32 there. Measured
    with AMX: a 128 px step 1.84 s in bf16 against 3.40 s in fp32 (bench/README.md). The kernel's flags
    first (exact, and what oneDNN dispatches on); torch's own probes where there is no /proc/cpuinfo."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
        flags = {f for line in lines if line.startswith("flags") for f in line.split(":", 1)[1].split()}
        return any(f in flags for f in CPU_BF16_FLAGS)
    except OSError:
        pass
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(p()) for p in probes if p is not None)


def resolve_cuda_graph(mode: str, device: torch.device, world: int) -> bool:
    """Whether the step is replayed from CUDA graphs: one CUDA process ('auto'), or asked for ('on')."""
    supported = device.type == "cuda" and world == 1
    if mode == "on" and not supported:
        why = "it needs one CUDA process" + (f", not {world} (torchrun)" if world > 1 else "")
        raise ConfigError(f"cuda_graph='on': {why}; use 'auto' (eager where graphs don't apply) or 'off'")
    return mode != "off" and supported


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
