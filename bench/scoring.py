"""PEP8 corpus scoring: MB/s over the stdlib corpus, and how the ruff backend agrees.

Baseline: pycodestyle, one document after another in one process (the paper code's
approach): `PEP8Scorer.score_document` in a loop.
phf: `phf.data.scoring.score_corpus` (all cores, its default) with the `pep8-ruff`
scorer; also with `pep8` (pycodestyle on all cores) for reference.
Each repeat runs baseline and phf back to back; the ratio is per repeat, median.

Agreement of pep8-ruff with pycodestyle on the same corpus: per document (Spearman
rank correlation of document scores, share of documents on the same side of the
filtering threshold) and per line (Spearman of line scores, share of lines whose
aligned/misaligned label at the conditional threshold 0 agrees), and the violation
counts by code where the two differ.

    .venv/bin/python bench/scoring.py [--quick] [--mb 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FILTER_THRESHOLD = 0.002361  # the PEP8 task's filtering threshold (document score)
CONDITIONAL_THRESHOLD = 0.0  # the PEP8 task's conditional threshold (line score)


def rankdata(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    # average ranks over ties
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a, b) -> float:
    import numpy as np

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def baseline(texts):
    from phf.scorers.pep8 import PEP8Scorer

    scorer = PEP8Scorer()
    with common.Timer() as t:
        for text in texts:
            scorer.score_document(text)
    return t.seconds


def phf_scoring(texts, scorer: str, num_workers=None, scorer_args=None):
    from phf.data.scoring import score_corpus

    docs = [{"text": text, "meta": {"i": i}} for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        with common.Timer() as t:
            summary = score_corpus(iter(docs), os.path.join(tmp, "scored.jsonl"), scorer, scorer_args,
                                   num_workers=num_workers, resume=False)
    assert summary.documents + summary.failed_documents == len(docs), summary
    return t.seconds


def agreement(texts) -> dict:
    from phf.scorers.pep8 import PEP8Scorer
    from phf.scorers.pep8_ruff import RuffPEP8Scorer

    py = PEP8Scorer()
    viol_py = [py.violations(t) for t in texts]
    scored_py = [py.score_document(t) for t in texts]
    doc_py = [py.document_score(*s) for s in scored_py]
    line_py = [x for _, s in scored_py for x in s]
    codes_py = Counter(c for v in viol_py for _, c in v)
    out = {"documents": len(texts), "lines": len(line_py)}
    for key, kwargs in (("pep8-ruff", {}), ("pep8-ruff continuation_lines=True", {"continuation_lines": True})):
        rf = RuffPEP8Scorer(**kwargs)
        viol_rf = rf.violations_batch(texts)
        scored_rf = rf.score_documents(texts)
        doc_rf = [rf.document_score(*s) for s in scored_rf]
        line_rf = [x for _, s in scored_rf for x in s]
        assert len(line_py) == len(line_rf)
        mis_py = [a > CONDITIONAL_THRESHOLD for a in line_py]
        mis_rf = [b > CONDITIONAL_THRESHOLD for b in line_rf]
        codes_rf = Counter(c for v in viol_rf for _, c in v)
        out[key] = {
            "document_spearman": spearman(doc_py, doc_rf),
            "document_filter_label_agreement": sum((a <= FILTER_THRESHOLD) == (b <= FILTER_THRESHOLD)
                                                   for a, b in zip(doc_py, doc_rf)) / len(texts),
            "line_spearman": spearman(line_py, line_rf),
            "line_label_agreement": sum(a == b for a, b in zip(mis_py, mis_rf)) / len(line_py),
            "misaligned_lines": {"pycodestyle": sum(mis_py), "ruff": sum(mis_rf),
                                 "both": sum(a and b for a, b in zip(mis_py, mis_rf))},
            "violations": {"pycodestyle": sum(codes_py.values()), "ruff": sum(codes_rf.values())},
            "violations_by_code_where_they_differ": {
                c: [codes_py[c], codes_rf[c]] for c in sorted(set(codes_py) | set(codes_rf))
                if codes_py[c] != codes_rf[c]},
            "files_not_parsed": rf.failures,
        }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mb", type=float, default=None, help="corpus size in MB (default 4, quick 1)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    from phf.scorers.pep8_ruff import find_ruff

    try:
        find_ruff()
    except ValueError as e:
        return common.write_result("scoring", {"skipped": str(e), "met": False})
    mb = args.mb or (1.0 if args.quick else 4.0)
    repeats = args.repeats or (2 if args.quick else 3)
    texts = common.stdlib_texts(int(mb * 1e6))
    size = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    rows = {"baseline_pycodestyle_1proc": [], "phf_pep8_ruff": [], "phf_pep8_ruff_continuation_lines": [],
            "phf_pep8_pycodestyle_all_cores": []}
    ratios = []
    retries = 0
    for r in range(repeats):
        (tb, tr), n = common.clean_repeat(lambda: (baseline(texts), phf_scoring(texts, "pep8-ruff")))
        retries += n
        rows["baseline_pycodestyle_1proc"].append(size / tb)
        rows["phf_pep8_ruff"].append(size / tr)
        ratios.append(tb / tr)
        if r == 0 or not args.quick:
            rows["phf_pep8_ruff_continuation_lines"].append(
                size / phf_scoring(texts, "pep8-ruff", scorer_args={"continuation_lines": True}))
            rows["phf_pep8_pycodestyle_all_cores"].append(size / phf_scoring(texts, "pep8"))
        print(f"repeat {r}: baseline {size / tb:.2f} MB/s, pep8-ruff {size / tr:.2f} MB/s ({tb / tr:.1f}x)",
              flush=True)
    result = {
        "corpus": {"documents": len(texts), "MB": round(size, 2)},
        "MB_per_s": {k: common.summary(v) for k, v in rows.items()},
        "ratio": common.summary(ratios),
        "ratio_other_backends": {
            k: common.median(rows[k]) / common.median(rows["baseline_pycodestyle_1proc"])
            for k in ("phf_pep8_ruff_continuation_lines", "phf_pep8_pycodestyle_all_cores")},
        "target": ">= 10x on 2 cores", "repeats_redone_after_a_stop": retries,
        "met": common.median(ratios) >= 10,
        "agreement": agreement(texts),
    }
    common.write_result("scoring", result)
    return result


if __name__ == "__main__":
    main()
