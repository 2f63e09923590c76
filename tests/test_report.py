"""`phf report`: Markdown + self-contained HTML, figures, top samples, on made-up runs."""

import json
import math
import re

import pytest

from phf.cli import main
from phf.report import top_samples, write_report

RUNS = {
    # name: (objective, misalignment, kl, held-out loss)
    "mle": ("mle", 0.020, 0.0, 3.10),
    "filtering": ("filtering", 0.012, 0.40, 3.25),
    "conditional": ("conditional", 0.004, 0.15, 3.12),
}


def _make_run(root, name, objective, mis, kl, loss, tokens=1000, with_kl=True):
    d = root / name
    (d / "samples").mkdir(parents=True)
    results = {"run": name, "objective": objective, "task": "pep8", "num_tokens": tokens, "misalignment": mis,
               "expected_max": mis * 3, "hit_rate": 0.5, "heldout_loss": loss, "kl": kl if with_kl else None,
               "scenarios": {
                   "unconditional": {"misalignment": mis, "expected_max": mis * 3, "hit_rate": 0.5, "num_samples": 8,
                                     "distinct_1": 0.5, "distinct_2": 0.8, "entropy_2": 5.0, "mean_length": 30.0},
                   "functions": {"misalignment": mis / 2, "expected_max": mis, "hit_rate": 0.25, "num_samples": 8,
                                 "distinct_1": 0.4, "distinct_2": 0.7, "entropy_2": 4.0, "mean_length": 20.0,
                                 "prompts_file": "prompts/pep8_functions.jsonl", "control_position": "after",
                                 "score_with_prompt": True}}}
    if with_kl:
        results["kl_details"] = {"kl": kl, "reference": str(root / "mle")}
    (d / "results.json").write_text(json.dumps(results))
    # 8 samples per scenario, scores 0..7 (x scale); sample i's text names its rank
    for scenario in ("unconditional", "functions"):
        with open(d / "samples" / f"{scenario}.jsonl", "w") as f:
            for i in [3, 7, 0, 5, 1, 6, 2, 4]:
                prompt = "def f():\n" if scenario == "functions" else ""
                f.write(json.dumps({"prompt": prompt, "text": f"    sample_{name}_{scenario}_{i}\n",
                                    "score": i * mis}) + "\n")
    with open(d / "metrics.jsonl", "w") as f:
        for step in (0, 10, 20):
            f.write(json.dumps({"step": step, "tokens_seen": step * 100, "eval/misalignment": mis * (3 - step / 10),
                                "eval/heldout_loss": loss + (20 - step) / 10}) + "\n")
            if step:
                f.write(json.dumps({"step": step, "tokens_seen": step * 100, "loss": 4.0}) + "\n")
        f.write('{"step": 20, "trunc')  # a line cut short by a killed run is skipped
    return d


@pytest.fixture()
def runs(tmp_path):
    return [_make_run(tmp_path / "runs", name, *values) for name, values in RUNS.items()]


def test_report_has_table_plots_curves_and_top_samples(runs, tmp_path):
    out = tmp_path / "out" / "report.md"
    md = write_report(runs, out, title="Test report")
    assert md == out.read_text()
    figures = tmp_path / "out" / "report_figures"
    for png in ("pareto_kl.png", "pareto_heldout_loss.png", "curves.png"):
        data = (figures / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
        assert f"(report_figures/{png})" in md
    assert "| conditional | conditional | 1,000 | 1 | 0.00400 |" in md
    assert "## Misalignment vs capability" in md and "## During training" in md and "## Scenarios" in md
    # the reference's KL of 0 cannot go on a log axis; the caption says so
    assert "Linear x" in md
    # top 5 per run and scenario, highest first: ranks 7..3, never 2..0
    section = md.split("## Highest-scoring samples")[1]
    for name in RUNS:
        for scenario in ("unconditional", "functions"):
            ranks = [int(m) for m in re.findall(rf"sample_{name}_{scenario}_(\d)", section)]
            assert ranks == [7, 6, 5, 4, 3], (name, scenario)
    assert "def f():\n    sample_mle_functions_7" in section  # scored with the prompt: shown with it


def test_html_is_self_contained(runs, tmp_path):
    write_report(runs, tmp_path / "r.md", title="T <&>")
    page = (tmp_path / "r.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    assert "<title>T &lt;&amp;&gt;</title>" in page and "<table>" in page and "<details>" in page


def test_pareto_against_heldout_loss_when_a_run_has_no_kl(tmp_path):
    runs = [_make_run(tmp_path, "mle", "mle", 0.02, 0.0, 3.1),
            _make_run(tmp_path, "cond", "conditional", 0.01, None, 3.2, with_kl=False)]
    md = write_report(runs, tmp_path / "report.md")
    assert "pareto_heldout_loss.png" in md and "pareto_kl.png" not in md
    # held-out losses 3.1 and 3.2: too narrow for a log axis, which would label no tick there
    assert "Linear x (its values span less than a factor of 3)" in md


def test_samples_are_fenced_and_escaped(tmp_path):
    d = _make_run(tmp_path, "mle", "mle", 0.02, 0.1, 3.1)
    nasty = "x = '''\n```\n<script>alert(1)</script>\n"
    with open(d / "samples" / "unconditional.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "", "text": nasty, "score": 99.0}) + "\n")
    md = write_report([d], tmp_path / "report.md")
    assert "````\n" + nasty + "````" in md  # a longer fence than any backtick run inside
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert top_samples(d, "unconditional", k=1)[0]["text"] == nasty


def test_optional_sections(runs, tmp_path):
    (runs[2] / "redteam.json").write_text(json.dumps({
        "red_lm": "runs/red", "rounds": [{"round": i, "expected_max": 0.01 + i / 100, "mean": 0.01, "pool_size": 5}
                                         for i in range(3)]}))
    results = json.loads((runs[0] / "results.json").read_text())
    results["lm_eval"] = {"arc_easy": {"acc": 0.25, "acc_stderr": 0.02}}
    (runs[0] / "results.json").write_text(json.dumps(results))
    md = write_report(runs, tmp_path / "report.md")
    assert "## Red teaming" in md and "| conditional | 0.01000 | 0.02000 | 0.03000 |" in md
    assert (tmp_path / "report_figures" / "red_team.png").exists()
    assert "| mle | 0.2500 ± 0.0200 |" in md


def test_without_curves_or_scenarios(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"run": "old", "objective": "mle", "misalignment": 0.1,
                                                "expected_max": 0.2, "hit_rate": 1.0, "heldout_loss": 3.0, "kl": None}))
    md = write_report([d], tmp_path / "report.md")
    assert "| old | mle |" in md and "## During training" not in md and "Highest-scoring" not in md


def test_same_run_names_are_told_apart(tmp_path):
    a = _make_run(tmp_path / "a", "mle", "mle", 0.02, 0.1, 3.1)
    b = _make_run(tmp_path / "b", "mle", "mle", 0.03, 0.2, 3.2)
    md = write_report([a, b], tmp_path / "report.md")
    assert "| a/mle |" in md and "| b/mle |" in md


def test_report_cli(runs, tmp_path, capsys):
    out = tmp_path / "cli" / "report.md"
    assert main(["report", *map(str, runs), "-o", str(out), "--title", "CLI report"]) == 0
    assert out.exists() and out.with_suffix(".html").exists()
    assert "<h1>CLI report</h1>" in out.with_suffix(".html").read_text()
    printed = capsys.readouterr().out
    assert "| mle | mle |" in printed and "report.html" in printed


def test_points_on_top_of_each_other_are_found_for_labelling():
    import matplotlib.pyplot as plt

    from phf.plots import _overlapping

    a, b = {"x": 4.60, "y": 0.0806}, {"x": 4.61, "y": 0.0814}  # the demo's MLE and RWR
    c, d, e = {"x": 5.6, "y": 0.082}, {"x": 6.3, "y": 0.104}, {"x": 4.39, "y": 0.0273}
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    ax.scatter([p["x"] for p in (a, b, c, d, e)], [p["y"] for p in (a, b, c, d, e)])
    ax.set_yscale("log")
    ranks = _overlapping(ax, [a, b, c, d, e], "x", "y")  # where they are drawn, in points
    assert ranks == {id(a): 0, id(b): 1}
    assert _overlapping(ax, [c, d], "x", "y") == {}
    plt.close(fig)


def test_a_finetuning_curve_starts_where_its_pretraining_ended(tmp_path):
    from phf.report import _tokens_before

    pre = _make_run(tmp_path, "pre", "mle", 0.02, 0.1, 3.1)
    (pre / "train_summary.json").write_text(json.dumps({"tokens_seen": 5000, "started_from": "scratch (tiny)"}))
    ft = _make_run(tmp_path, "ft", "conditional", 0.01, 0.1, 3.0)
    (ft / "train_summary.json").write_text(json.dumps({"tokens_seen": 1000, "started_from": "elsewhere/pre"}))
    assert _tokens_before(ft) == 5000 and _tokens_before(pre) == 0


# misalignment per seed (1, 2, 3); everything else as in RUNS
SEEDED = {
    "mle": ("mle", [0.020, 0.022, 0.024]),
    "filtering": ("filtering", [0.021, 0.019, 0.026]),   # differences 0.001, -0.003, 0.002: undecided
    "conditional": ("conditional", [0.004, 0.005, 0.009]),  # differences -0.016, -0.017, -0.015: lower
}


def _seeded_runs(root):
    dirs = []
    for name, (objective, values) in SEEDED.items():
        for seed, mis in zip((1, 2, 3), values):
            d = _make_run(root / name, f"seed-{seed}", objective, mis, 0.0 if objective == "mle" else 0.1 * seed,
                          3.0 + seed / 100)
            dirs.append(d)
    return dirs


def test_seeds_are_grouped_with_intervals_and_tests(tmp_path):
    md = write_report(_seeded_runs(tmp_path / "runs"), tmp_path / "report.md")
    half = 4.302652729 / math.sqrt(3)  # t(0.975, 2) / sqrt(n), times the sd of each run's seeds
    # MLE: mean 0.022, sd 0.002; conditional: mean 0.006, sd sqrt(7)/1000
    assert f"| mle | mle | 1,000 | 3 | 0.02200 ± {0.002 * half:.5f} |" in md
    assert f"| conditional | conditional | 1,000 | 3 | 0.00600 ± {math.sqrt(7) / 1000 * half:.5f} |" in md
    rows = {name: next(line for line in md.splitlines() if line.startswith(f"| {name} | {obj} | 1,000 | 3 |"))
            for name, (obj, _) in SEEDED.items()}
    assert "(reference)" in rows["mle"]
    assert "lower: misalignment" in rows["conditional"] and "undecided: " in rows["conditional"]
    assert "undecided: misalignment" in rows["filtering"]
    # the differences table: conditional - MLE = -0.016 ± 0.001 * half, paired
    diff = next(line for line in md.splitlines() if line.startswith("| conditional | misalignment |"))
    assert f"| -0.01600 | [{-0.016 - 0.001 * half:+.5f}, {-0.016 + 0.001 * half:+.5f}] | paired t | 3 |" in diff
    assert diff.endswith("| lower |")
    filt = next(line for line in md.splitlines() if line.startswith("| filtering | misalignment |"))
    assert filt.endswith("| undecided |")
    # each (run, seed) is still listed, and the Pareto plot has error bars over seeds
    assert "| conditional (seed 2) | conditional | 0.00500 |" in md
    assert "Error bars: 95% intervals, over seeds (Student t)" in md
    assert (tmp_path / "report_figures" / "pareto_kl.png").exists()


def test_one_seed_shows_the_within_run_interval_and_no_finding(runs, tmp_path):
    results = json.loads((runs[2] / "results.json").read_text())
    results["misalignment_ci"] = [0.003, 0.0052]
    (runs[2] / "results.json").write_text(json.dumps(results))
    md = write_report(runs, tmp_path / "report.md")
    assert "| conditional | conditional | 1,000 | 1 | 0.00400 [0.00300, 0.00520] |" in md
    assert "undecided (fewer than 2 seeds)" in md and "cannot be told from seed-to-seed noise" in md


def test_seed_curves_are_averaged_at_each_point():
    from phf.report import _mean_curve

    a = [{"tokens_seen": 0, "eval/misalignment": 0.2}, {"tokens_seen": 10, "eval/misalignment": 0.1}, {"loss": 1.0}]
    b = [{"tokens_seen": 0, "eval/misalignment": 0.4}, {"tokens_seen": 10, "eval/heldout_loss": 3.0}]
    assert _mean_curve([a, b], ["eval/misalignment", "eval/heldout_loss"]) == [
        {"tokens_seen": 0, "eval/misalignment": pytest.approx(0.3)},
        {"tokens_seen": 10, "eval/misalignment": 0.1, "eval/heldout_loss": 3.0}]


def test_finetuning_is_compared_with_feedback_from_the_start(tmp_path):
    # conditional from the start on 1,000 tokens vs MLE on 500 then conditional on 500, seeds 1-3
    root = tmp_path / "runs"
    dirs = []
    for seed, (scratch, finetuned) in zip((1, 2, 3), [(0.004, 0.006), (0.005, 0.008), (0.009, 0.010)]):
        pre = _make_run(root / "mle-50pct", f"seed-{seed}", "mle", 0.03, 0.1, 3.3, tokens=500)
        (pre / "train_summary.json").write_text(json.dumps({"tokens_seen": 500, "started_from": "scratch (tiny)"}))
        ft = _make_run(root / "mle+conditional-finetune", f"seed-{seed}", "conditional", finetuned, 0.1,
                       3.1 + seed / 100, tokens=500)
        (ft / "train_summary.json").write_text(json.dumps({"tokens_seen": 500, "started_from": str(pre)}))
        dirs += [_make_run(root / "conditional", f"seed-{seed}", "conditional", scratch, 0.1, 3.0 + seed / 50), pre, ft]
    md = write_report(dirs, tmp_path / "report.md")
    assert "## Feedback from the start vs MLE then finetuning" in md
    # finetuned - from the start: 0.002, 0.003, 0.001 -> mean 0.002, sd 0.001, paired t over 3 seeds
    half = 4.302652729 / math.sqrt(3) * 0.001
    row = next(line for line in md.splitlines()
               if line.startswith("| mle+conditional-finetune | conditional | misalignment |"))
    assert f"| +0.00200 | [{0.002 - half:+.5f}, {0.002 + half:+.5f}] | paired t | 3 |" in row
    assert row.endswith("| undecided |")  # the interval [-0.0005, +0.0045] holds 0
    loss = next(line for line in md.splitlines()
                if line.startswith("| mle+conditional-finetune | conditional | held-out loss |"))
    assert loss.endswith("| higher |")  # +0.09, +0.08, +0.07
    # the half-budget MLE run is not a finetuning run and is compared with nothing here
    assert "| mle-50pct | conditional |" not in md


def test_no_finetuning_section_without_a_finetuning_run(runs, tmp_path):
    assert "MLE then finetuning" not in write_report(runs, tmp_path / "report.md")


def test_a_run_evaluated_under_a_decoding_mode_says_so(tmp_path):
    runs = [_make_run(tmp_path, "mle", "mle", 0.02, 0.0, 3.1), _make_run(tmp_path, "cond", "conditional", 0.01, 0.1, 3.2)]
    results = json.loads((runs[1] / "results.json").read_text())
    (runs[1] / "results.json").write_text(json.dumps({**results, "decoding": {"mode": "guidance", "label": "guidance:2"}}))
    md = write_report(runs, tmp_path / "report.md")
    assert "| cond | conditional (guidance:2) |" in md and "| mle | mle |" in md


def test_a_damaged_results_file_is_named(runs, tmp_path):
    from phf.errors import DataError

    (runs[1] / "results.json").write_text('{"run": "filtering", "misal')
    with pytest.raises(DataError, match=r"filtering/results.json.*phf eval"):
        write_report(runs, tmp_path / "report.md")
