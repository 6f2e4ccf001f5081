"""What machine this is: bf16 and VNNI on the CPU, memory, the platform's process pools, a one-line description."""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
from pathlib import Path


def _cpuinfo() -> str:
    return _read("/proc/cpuinfo")


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    flags = _cpuinfo()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_has_vnni() -> bool:
    """True when the CPU says it sums int8 products in 32 bits (AVX512-VNNI, AVX-VNNI or AMX); False where it
    does not or cannot be read (not Linux): there ONNX Runtime's x86 int8 kernels may saturate (see
    ``model_folder.int8.cpu_session``)."""
    flags = _cpuinfo()
    return any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def describe() -> str:
    """'NVIDIA H100 ...' when a CUDA device is visible, else '2 cores of AMD EPYC ...'."""
    import torch  # only callers that trained a model ask, and they have torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "CPU"
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores of {cpu}"


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux MemAvailable, else psutil when installed, else the
    physical memory), or None when the platform says nothing."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    try:
        import psutil  # optional: only where /proc/meminfo is missing (macOS, Windows)

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def process_pool(workers: int):
    """A multiprocessing Pool started the way the platform allows: fork on Linux (workers start at once and share
    the parent's imports), the platform's default elsewhere (spawn on Windows and macOS, where fork is missing or
    unsafe). Workers must be module-level functions taking picklable arguments."""
    method = "fork" if sys.platform.startswith("linux") else None
    return multiprocessing.get_context(method).Pool(workers)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def has_accelerator() -> bool:
    """A CUDA, ROCm, MPS, XPU, ... device is there (torch's own answer, so every backend counts)."""
    import torch  # optional: hardware is a shared module, and serving may run without torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()
