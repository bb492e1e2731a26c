"""Committed lessons carry fresh outputs: the docs site shows them, so a missing or stale plot is a defect."""
import subprocess, sys
import pytest
from lessons import ROOT, notebooks

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.name)
def test_outputs_are_fresh(nb):
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'lessons.py'), '--check', nb.stem],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
