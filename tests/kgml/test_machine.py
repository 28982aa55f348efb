"""The machine line of every results block is detected, not typed."""

from __future__ import annotations

import os

import jax

from kgml.machine import describe_machine, machine_line


def test_machine_is_detected():
    m = describe_machine()
    assert m["cpu_count"] == (os.cpu_count() or 1)
    assert m["jax_backend"] == jax.default_backend()
    assert m["jax_devices"].startswith(f"{len(jax.devices())} × ")
    line = machine_line()
    assert f"{m['cpu_count']} cores" in line and m["jax_backend"] in line and "sandbox" not in line
