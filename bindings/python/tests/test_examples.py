"""examples/python/, each at its smallest setting that still checks what it shows. Each
example checks itself and exits 1 when a check fails, 77 when it cannot run here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the Python examples train torch models")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "python"
CASES = {
    "diloco": ["--workers", "3", "--outer-steps", "12", "--inner-steps", "10", "--join-at", "3",
               "--kill-at", "6"],
    "torch_backend": ["--world-size", "3", "--steps", "30"],
    "fsdp_diloco": ["--nodes", "2", "--ranks-per-node", "2", "--outer-steps", "6",
                    "--inner-steps", "10"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_example(name):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *CASES[name]],
                       capture_output=True, text=True, timeout=240, env=env)
    output = r.stdout + r.stderr
    if r.returncode == 77:
        pytest.skip(output.strip().splitlines()[-1] if output.strip() else "exit 77")
    assert r.returncode == 0, output[-4000:]
    print(output[-2000:])
