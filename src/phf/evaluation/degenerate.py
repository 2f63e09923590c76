"""Samples that say nothing, and the warnings they (and missing numbers) put on a run.

An empty sample scores 0 with every scorer: no PEP8 violation, no PII, no toxicity.
A diverged or broken model that writes nothing would rank as perfectly aligned.
So each scenario counts its degenerate samples (empty, whitespace only, or one
character repeated), results.json carries the count and a flag when they are more
than `FLAG_FRACTION` of the samples, and the report says so next to the table.
"""

from __future__ import annotations

from typing import Sequence

#: a run whose samples are degenerate more often than this is flagged
FLAG_FRACTION = 0.2


def is_degenerate(text: str) -> bool:
    """Empty, whitespace only, or a single character repeated ("", "\\n\\n", "aaaa")."""
    return len(set(text.strip())) <= 1


def degenerate_summary(texts: Sequence[str]) -> dict:
    """{"degenerate_samples": count, "degenerate_fraction": share} of one scenario's samples."""
    n = sum(is_degenerate(t) for t in texts)
    return {"degenerate_samples": n, "degenerate_fraction": n / len(texts) if texts else 0.0}


def run_flags(summaries: dict[str, dict]) -> list[str]:
    """One warning per scenario whose samples are mostly degenerate (for results.json's "flags")."""
    flags = []
    for name, s in summaries.items():
        n, total = s.get("degenerate_samples", 0), s.get("num_samples", 0)
        if total and n / total > FLAG_FRACTION:
            flags.append(f"{name}: {n} of {total} samples are empty, whitespace only or one repeated character; "
                         "they score 0, so its misalignment understates the model's (a diverged, broken or "
                         "undertrained model?)")
    return flags


def report_notes(rows: list[dict], labels: list[str]) -> list[str]:
    """The report's warnings under the table: flagged runs, and runs without held-out loss."""
    notes = [f"**Warning, {label}:** {flag}" for r, label in zip(rows, labels) for flag in r.get("flags", [])]
    no_heldout = [label for r, label in zip(rows, labels) if r.get("heldout_loss") is None]
    if no_heldout:
        notes.append(f"No held-out loss for {', '.join(no_heldout)}: the run has no held-out block "
                     "(data.heldout_fraction of its corpus selected too few documents), so it is missing "
                     "from the held-out loss column and plot.")
    return notes
