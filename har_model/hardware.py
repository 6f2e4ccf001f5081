"""What machine this is: native bf16 on the CPU, and a one-line description for cards and reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    flags = _cpuinfo()
    return " avx512_bf16" in flags or " amx_bf16" in flags


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
