"""The CPU a figure was measured on: its model name and widest vector instruction set.

CPU timings differ several-fold between an AVX2 and an AVX-512 machine (the scan kernels are
compiled for the host with 16-lane vectors), so the benchmarks and ``algnet profile`` print this
beside their numbers and record it in their JSON.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Widest first: the first flag present names the vector ISA (x86 /proc/cpuinfo "flags", Arm
# "Features"; LLVM's host feature names are the same words).
_ISA_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
              ("sve", "SVE"), ("asimd", "NEON"), ("neon", "NEON"))


def vector_isa(flags: set[str]) -> str:
    """The widest vector ISA among CPU feature flags (``unknown`` when none is known)."""
    flags = {f.lower().replace(".", "_") for f in flags}
    return next((name for flag, name in _ISA_FLAGS if flag in flags), "unknown")


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model name, feature flags) of the first processor in a /proc/cpuinfo text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _llvm_host() -> tuple[str | None, set[str]]:
    """(LLVM's host CPU name, its enabled features): the fallback off Linux."""
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features()
        return llvm.get_host_cpu_name(), {name for name, on in features.items() if on}
    except Exception:  # noqa: BLE001 - llvmlite missing or the host unsupported: report unknown
        return None, set()


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str | None]:
    """``{"cpu": model name, "isa": "AVX2" | "AVX-512" | ..., "llvm_cpu": e.g. "znver3"}``.

    Reads /proc/cpuinfo on Linux; elsewhere (or when it names no flags) takes LLVM's host features,
    and the model name falls back to :func:`platform.processor`. ``llvm_cpu`` is the target numba
    compiles the CPU kernels for (None without llvmlite); virtual machines often report only a
    family name such as "AMD EPYC", which it makes precise.
    """
    model, flags = None, set()
    try:
        model, flags = parse_cpuinfo(Path(cpuinfo).read_text())
    except OSError:
        pass
    llvm_name, llvm_flags = _llvm_host()
    if not flags:
        flags = llvm_flags
        model = model or platform.processor() or llvm_name
    return {"cpu": model or platform.machine() or "unknown", "isa": vector_isa(flags), "llvm_cpu": llvm_name}


def describe_cpu() -> str:
    """One line for printed figures, e.g. ``CPU: AMD EPYC (AVX2; LLVM target znver3)``."""
    info = cpu_info()
    target = f"; LLVM target {info['llvm_cpu']}" if info["llvm_cpu"] else ""
    return f"CPU: {info['cpu']} ({info['isa']}{target})"
