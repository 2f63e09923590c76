"""Shared pieces of the benchmarks: machine facts, fixtures, timing, result files.

Every benchmark script measures its baseline and phf in the same process,
interleaved (A B A B ...), repeats, and reports medians: the machines are shared
and noisy, so only ratios measured side by side mean anything. Each script writes
`bench/out/results/<name>.json`; `bench/run_all.py` turns those into RESULTS.md.

Fixtures (a scored stdlib corpus, a tokenizer, packed blocks) are cached under
`bench/out/fixtures/`, keyed by their parameters, so repeated runs skip them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
RESULTS = OUT / "results"
FIXTURES = OUT / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(ROOT / "src"))

# Model presets, with the tokenizer and batch shape of configs/models/<preset>.yaml
PRESET_SHAPES = {
    "tiny": dict(vocab_size=8192, block_size=256, batch_size=16),
    "small": dict(vocab_size=16384, block_size=512, batch_size=16),
    # the paper's model: only bench/gpu_mfu.py uses it
    # (4 MB of code runs out of BPE merges at ~31k tokens: the tokenizer learns from more)
    "gpt2-small": dict(vocab_size=50257, block_size=1024, batch_size=16, tokenizer_bytes=24_000_000),
}


# ---------------------------------------------------------------- machine and results

def machine_facts() -> dict:
    import torch

    facts = {"python": platform.python_version(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "cores": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L3 cache"):
                facts[key.strip()] = value.strip()
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        facts["avx512"] = any(f.startswith("avx512") for f in flags)
        facts["avx512_bf16"] = "avx512_bf16" in flags
        facts["amx"] = any(f.startswith("amx") for f in flags)
    except (OSError, subprocess.CalledProcessError):
        facts["Model name"] = platform.processor()
    facts["load_average_at_start"] = os.getloadavg()
    return facts


def write_result(name: str, result: dict) -> Path:
    """bench/out/results/<name>.json with the command, machine and time of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"name": name, "command": " ".join([".venv/bin/python", *[_rel(a) for a in sys.argv]]),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_facts(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=float))
    return path


def _rel(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(ROOT))
    except ValueError:
        return arg


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summary(xs) -> dict:
    xs = list(xs)
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def quick_flag(argv=None) -> bool:
    return "--quick" in (argv if argv is not None else sys.argv[1:])


def repeats_and_steps(description: str, argv, quick: tuple[int, int], full: tuple[int, int]) -> tuple[int, int]:
    """--quick, --repeats N and --steps N of a training benchmark: (repeats, steps per run),
    the `quick` or `full` defaults unless given."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    repeats, steps = quick if args.quick else full
    return args.repeats or repeats, args.steps or steps


# ---------------------------------------------------------------- fixtures

def stdlib_texts(max_bytes: int) -> list[str]:
    from phf.config import DataConfig
    from phf.data.sources import iter_documents

    return [d["text"] for d in iter_documents(DataConfig(source="stdlib", max_bytes=max_bytes))]


def scored_corpus(max_bytes: int, scorer: str = "pep8") -> Path:
    """The first `max_bytes` of the stdlib, scored (cached JSONL)."""
    from phf.config import DataConfig
    from phf.data.scoring import score_corpus
    from phf.data.sources import iter_documents

    path = FIXTURES / f"scored-{scorer}-{max_bytes}.jsonl"
    if not path.exists():
        FIXTURES.mkdir(parents=True, exist_ok=True)
        tmp = FIXTURES / f"partial-{path.name}"
        score_corpus(iter_documents(DataConfig(source="stdlib", max_bytes=max_bytes)), str(tmp), scorer,
                     resume=False)
        tmp.rename(path)
    return path


def tokenizer(vocab_size: int, max_bytes: int = 4_000_000):
    """A BPE tokenizer trained on the stdlib corpus (cached), with the control tokens."""
    from phf.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    path = FIXTURES / f"tokenizer-{vocab_size}"
    if not (path / "tokenizer.json").exists():
        save_tokenizer(train_tokenizer(stdlib_texts(max_bytes), vocab_size), path)
    tok = load_tokenizer(str(path))
    return tok


def packed(objective: str, preset: str = "tiny", max_bytes: int = 4_000_000, threshold: float | None = None):
    """(PackedDataset path, tokenizer) for an objective on the scored stdlib corpus (cached)."""
    from phf.data.packing import PackSpec, pack
    from phf.records import read_scored
    from phf.tokenizer import add_control_tokens

    shape = PRESET_SHAPES[preset]
    tok = tokenizer(shape["vocab_size"], shape.get("tokenizer_bytes", 4_000_000))
    if objective == "conditional":
        add_control_tokens(tok)
    if threshold is None:  # the PEP8 task's reference thresholds
        threshold = {"filtering": 0.002361}.get(objective, 0.0)
    name = objective if objective in ("filtering", "conditional") else "mle"
    out = FIXTURES / f"pack-{preset}-{name}-{max_bytes}"
    if not (out / "pack.json").exists():
        spec = PackSpec(block_size=shape["block_size"], objective=name, threshold=threshold,
                        drop_token_fraction=0.01)
        pack(read_scored(scored_corpus(max_bytes)), tok, spec, out)
    return out, tok


def rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        self.stop_mark = stopped_seconds()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        #: time this process spent stopped (SIGSTOP) inside the timed section
        self.stopped = stopped_seconds() - self.stop_mark


# ---------------------------------------------------------------- stop detection
# Some jobs on these shared machines SIGSTOP every other python process while they
# time something. A stopped process's wall-clock timings are meaningless, so a thread
# ticks every 0.1 s and adds up the gaps longer than a second; a benchmark repeat that
# overlapped one is run again (`clean_repeat`).

_stopped = 0.0


def _watch() -> None:
    global _stopped
    last = time.monotonic()
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        if now - last > 1.0:
            _stopped += now - last - 0.1
        last = now


threading.Thread(target=_watch, daemon=True, name="stop-watch").start()


def stopped_seconds() -> float:
    return _stopped


def clean_repeat(fn, tries: int = 4):
    """fn() again until a call was not stopped (SIGSTOP) for more than 0.5 s; returns
    (result, retries). After `tries` calls the last result is kept, flagged."""
    for attempt in range(tries):
        mark = stopped_seconds()
        result = fn()
        stopped = stopped_seconds() - mark
        if stopped <= 0.5:
            return result, attempt
        print(f"   (this process was stopped for {stopped:.1f} s during the measurement: repeating it)", flush=True)
    return result, tries
