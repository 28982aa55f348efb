"""Speed-regression tracking: every benchmark appends one JSON line (its figures, the machine, the load, the date)
to a results file; `benchmarks/compare.py` compares two such files.

    from record import append_result      # benchmarks/ is on sys.path when a script there runs
    append_result("process_speed", figures, started=machine_now())

The file is ``benchmarks/results.jsonl`` unless ``$KGML_BENCH_RESULTS`` names another. One line per run:
``{"benchmark", "figures", "machine", "load_start", "load_end", "date", "argv", "commit"}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from kgml.machine import cpu_model, memory_gib

RESULTS = Path(__file__).with_name("results.jsonl")


def machine() -> dict:
    """Platform, CPU model, core counts, memory, and the JAX backend and devices when jax is in use."""
    info = {
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
    mem = memory_gib()
    if mem is not None:
        info["memory_gb"] = round(mem * 2**30 / 1e9, 1)
    if "jax" in sys.modules:  # never import jax just to describe the machine
        jax = sys.modules["jax"]
        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        devices = jax.devices()
        info["jax_devices"] = f"{len(devices)} × {devices[0].device_kind}" if devices else "none"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (the machine may be shared: figures are read against it)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def append_result(benchmark: str, figures: dict, load_start: list[float] | None = None,
                  path: str | os.PathLike | None = None) -> dict:
    """Append one JSON line for ``benchmark`` with ``figures`` (name → number) to the results file; returns it."""
    path = Path(path or os.environ.get("KGML_BENCH_RESULTS") or RESULTS)
    line = {
        "benchmark": benchmark,
        "figures": {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in figures.items()},
        "machine": machine(),
        "load_start": load_start,
        "load_end": load_average(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": sys.argv[1:],
        "commit": _commit(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:  # one write of one line: concurrent appends do not interleave
        f.write(json.dumps(line) + "\n")
    print(f"appended {benchmark} to {path}")
    return line
