"""The OpenMP wait policy every entry point sets (nanochat/__init__.py); its effect: bench/shared_machine.py."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("env, expected", [
    ({}, ("3000", None)),  # the short spin: bench/shared_machine.py
    ({"OMP_WAIT_POLICY": "PASSIVE"}, (None, "PASSIVE")),  # the user's choice stays
    ({"GOMP_SPINCOUNT": "300000"}, ("300000", None)),
])
def test_every_entry_point_sets_a_short_openmp_spin_unless_told(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", "import nanochat, os; print(os.environ.get('GOMP_SPINCOUNT'), "
                          "os.environ.get('OMP_WAIT_POLICY'))"], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert tuple(None if x == "None" else x for x in out) == expected
