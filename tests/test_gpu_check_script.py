"""``benchmarks/gpu_check.sh`` is run only when a GPU is lent, so it must not rot in between: its CPU
smoke mode (``GPU_CHECK_SMOKE=1``) runs every part end to end at toy sizes here (~40 s). The
frozen-throughput part had broken against the runner's API unnoticed (EvalRequest lost ``device``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import shared

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_part_in_its_cpu_smoke_mode(tmp_path):
    data = shared("brain_tumor_mri_cls").parent
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path / "out"), "DATA": str(data), "LVMBENCH_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "2"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "gpu_check: all parts ran" in r.stdout
    for part in ("step-split-b32", "step-split-b64", "frozen-bf16", "pretrain-gm"):
        assert (tmp_path / "out" / f"{part}.log").stat().st_size > 0, part
    assert "bare throughput" in (tmp_path / "out" / "frozen-bf16.log").read_text(encoding="utf-8")
    assert "random init" in r.stdout and (tmp_path / "out" / "pretrain" / "metrics.png").is_file()
