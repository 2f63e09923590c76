"""Where a published finding came from: the commit of `src/`, the CPU and its cores,
and the results.json files of a sweep. `findings.py` records them with every sweep it
publishes and `toxicity_investigation.py` with its analysis, so both import them from
here (and not from each other)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    """The short commit hash, with "+dirty" when `src/` has uncommitted changes."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def results_files(src: Path) -> list[Path]:
    """Every results.json under `src`, following linked run folders (a variant's shared MLE runs)."""
    return [Path(d) / "results.json" for d, _, files in os.walk(src, followlinks=True) if "results.json" in files]
