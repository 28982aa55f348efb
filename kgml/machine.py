"""The machine a result was measured on, detected (never typed): platform, CPU model, core count, memory,
JAX backend and devices. Every results block and benchmark record carries this line."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import jax

__all__ = ["cpu_model", "describe_machine", "machine_line", "memory_gib"]


def cpu_model() -> str:
    """The CPU model name (/proc/cpuinfo; else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Total memory (GiB), None where /proc/meminfo is not readable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_machine() -> dict:
    """Platform, CPU model, logical cores, memory (GiB), JAX version, backend and devices."""
    devices = jax.devices()
    mem = memory_gib()
    return {
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "memory_gib": None if mem is None else round(mem, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": f"{len(devices)} × {devices[0].device_kind}" if devices else "none",
    }


def machine_line() -> str:
    """One line for results blocks, e.g. ``Linux 6.1 x86_64, AMD EPYC 7B13, 2 cores, 23.5 GiB, jax 0.4.30 cpu
    (1 × cpu)``."""
    m = describe_machine()
    mem = "" if m["memory_gib"] is None else f", {m['memory_gib']} GiB"
    return (f"{m['platform']}, {m['cpu']}, {m['cpu_count']} cores{mem}, jax {m['jax']} "
            f"{m['jax_backend']} ({m['jax_devices']})")
