"""The wheel, installed into a fresh virtual environment outside the repository, runs `audit demo` and
`audit verify` on what it ships (templates, the zoo baseline, the demo's zoo pair)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from audit.demo import DEMO_PAIR

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.wheel


def _run(argv: list[str | Path], cwd: Path, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout may leak in
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_installs_and_runs_the_demo_and_verify(tmp_path):
    built = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", built, REPOSITORY], tmp_path)
    (wheel,) = built.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "audit/_data/templates/report.html.j2" in names and "audit/_data/baselines/zoo/population.json" in names
    shipped = {n.split("/")[4] for n in names if n.startswith("audit/_data/zoo/models/")}
    assert shipped == set(DEMO_PAIR)  # the demo's pair, not the whole zoo

    # A fresh environment: only the wheel is installed in it; its dependencies are this interpreter's
    # (a path line, not an install, so no index or network is needed).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel], tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    where = _run([venv / "bin" / "python", "-c", "import audit; print(audit.__file__)"], work)
    assert Path(where.strip()).is_relative_to(site)

    out = _run([venv / "bin" / "audit", "demo"], work)  # into reports/, made where it runs
    assert f"models/{DEMO_PAIR[0]} vs " in out and "verdict: Evidence against independent training" in out
    verify = out.splitlines()[-1].removeprefix("verify: ").split()
    assert verify == ["audit", "verify", "reports/demo.pdf", "--trust", "reports/demo-cert.pem", "--recompute"]
    # The printed command without --recompute (the demo has just run the same audit from the wheel; recomputing
    # would double this test's time): signature, trust, manifest, and the shipped models re-hashed.
    models = [line.removeprefix("demo: audited ").split(" against baseline")[0].split(" vs ")
              for line in out.splitlines() if line.startswith("demo: audited ")][0]
    verified = _run([venv / "bin" / "audit", *verify[1:-1], "--models", *models], work)
    assert "ok   model B:" in verified and verified.rstrip().endswith("verified: every check passed")
