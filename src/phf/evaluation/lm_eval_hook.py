"""Zero-/few-shot benchmarks through EleutherAI's lm-evaluation-harness (optional).

The paper also measures capability on downstream tasks; this runs any lm-eval task
(built-in ones, or your own YAML tasks over local files via `include_path`) on a
saved model directory and returns {task: {metric: value}}. lm-eval is an optional
dependency: `pip install "phf[lm-eval]"`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

_MISSING = ("lm-eval (lm-evaluation-harness) is not installed; install it with "
            "`pip install \"phf[lm-eval]\"` or `pip install lm-eval`")


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _flatten(task_results: dict) -> dict[str, float]:
    """{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...} -> {"acc": 0.5, "acc_stderr": 0.1}.

    The ",none" filter suffix is dropped; other filters stay ("exact_match,strict-match").
    """
    out = {}
    for key, value in task_results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # "alias", and "N/A" stderrs
        metric, _, filt = key.partition(",")
        out[metric if filt in ("", "none") else key] = float(value)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def run_lm_eval(model_dir: str | Path, tasks: Sequence[str | dict], *, num_fewshot: int | None = None,
                limit: int | float | None = None, batch_size: int | str = 8, device: str | None = None,
                include_path: str | Path | Sequence[str | Path] | None = None,
                include_defaults: bool = True, seed: int = 0) -> dict[str, dict[str, float]]:
    """Run lm-eval `tasks` on the HF causal LM saved in `model_dir`.

    `tasks`: lm-eval task names, or task config dicts. `include_path`: folder(s) of
    your own task YAMLs; `include_defaults=False` skips indexing lm-eval's built-in
    tasks (faster when only yours are used). `limit`: examples per task (for quick
    checks). Returns {task: {metric: value}}, stderrs included as "<metric>_stderr".
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError(_MISSING) from e
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(include_path, (str, Path)):
        include_path = [include_path]
    paths = [str(p) for p in include_path] if include_path else None
    task_manager = TaskManager(include_path=paths, include_defaults=include_defaults)
    output = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"},
        tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
        device=device, task_manager=task_manager, log_samples=False, bootstrap_iters=1000,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    if output is None:  # not rank 0 of a distributed run
        return {}
    return {task: _flatten(res) for task, res in output["results"].items()}
