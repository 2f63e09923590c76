"""Bad input: each fault is a clear error naming file, line (or record) and field under
`on_bad="error"`, or a counted skip under `on_bad="skip"`; no good record is ever lost
(records in = records out + records skipped)."""

import json

import pytest

from phf.cli import main
from phf.config import ConfigError, DataConfig, check_paths, load_config
from phf.records import ScoredRecord, read_scored
from phf.data.scoring import score_corpus
from phf.data.sources import iter_documents
from phf.errors import DataError
from phf.inputs import SourceStats

GOOD = {"texts": ["a = 1\n", "b = 2\n"], "scores": [0.0, 0.5]}

# (name, JSONL line, words the error must contain, skip reason)
BAD_SCORED = [
    ("malformed JSON", b'{"texts": ["x"], "scores": [0.1]', ["malformed JSON"], "malformed JSON"),
    ("missing texts", json.dumps({"scores": [0.1]}).encode(), ["'texts'"], "field 'texts' invalid"),
    ("length mismatch", json.dumps({"texts": ["a\n", "b\n"], "scores": [0.1]}).encode(),
     ["'texts'", "'scores'", "2", "1"], "'texts' and 'scores' differ in length"),
    ("NaN score", b'{"texts": ["a\\n", "b\\n"], "scores": [0.1, NaN]}', ["'scores'[1]", "nan"],
     "score NaN, infinite, negative or not a number"),
    ("infinite score", b'{"texts": ["a\\n"], "scores": [Infinity]}', ["'scores'[0]", "inf"],
     "score NaN, infinite, negative or not a number"),
    ("negative score", json.dumps({"texts": ["a\n"], "scores": [-0.5]}).encode(), ["'scores'[0]", "-0.5"],
     "score NaN, infinite, negative or not a number"),
    ("non-UTF-8 bytes", b'{"texts": ["caf\xe9\\n"], "scores": [0.0]}', ["not valid UTF-8"], "not UTF-8"),
    ("lone surrogate", b'{"texts": ["\\udc80\\n"], "scores": [0.0]}', ["'texts'", "UTF-8", "surrogate"],
     "not UTF-8"),
    ("empty document", json.dumps({"texts": [], "scores": []}).encode(), ["empty document"], "empty document"),
    ("NaN avg_score", b'{"texts": ["a\\n"], "scores": [0.0], "avg_score": NaN}', ["'avg_score'"],
     "score NaN, infinite, negative or not a number"),
    ("not an object", b'[1, 2]', ["expected a JSON object"], "not a JSON object"),
    ("attribute length mismatch",
     json.dumps({"texts": ["a\n", "b\n"], "scores": {"tox": [0.1], "pii": [0, 0]}}).encode(),
     ["'scores'['tox']", "has 1"], "'texts' and 'scores' differ in length"),
    ("attribute NaN score", b'{"texts": ["a\\n"], "scores": {"tox": [NaN]}}', ["'scores'['tox'][0]", "nan"],
     "score NaN, infinite, negative or not a number"),
    ("attribute avg_score mismatch", b'{"texts": ["a\\n"], "scores": {"tox": [0.1]}, "avg_score": 0.1}',
     ["'avg_score'", "tox"], "field 'avg_score' invalid"),
]


def _scored_file(tmp_path, bad_line: bytes):
    path = tmp_path / "scored.jsonl"
    good = json.dumps(GOOD).encode()
    path.write_bytes(b"\n".join([good, good, bad_line, good]) + b"\n")
    return path


@pytest.mark.parametrize("name,line,words,reason", BAD_SCORED, ids=[c[0] for c in BAD_SCORED])
def test_bad_scored_record_is_an_error_naming_file_line_and_field(tmp_path, name, line, words, reason):
    path = _scored_file(tmp_path, line)
    with pytest.raises(DataError) as e:
        list(read_scored(path))
    message = str(e.value)
    assert message.startswith(f"{path}:3:"), message
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize("name,line,words,reason", BAD_SCORED, ids=[c[0] for c in BAD_SCORED])
def test_bad_scored_record_is_a_counted_skip_and_good_records_survive(tmp_path, name, line, words, reason):
    path = _scored_file(tmp_path, line)
    stats = SourceStats()
    records = list(read_scored(path, stats, on_bad="skip"))
    assert len(records) == 3 and all(r.texts == GOOD["texts"] for r in records)
    assert stats.skipped == {reason: 1}
    assert stats.records_in == stats.read + sum(stats.skipped.values()) == 4


def test_skip_reasons_stay_few_on_many_distinct_errors(tmp_path):
    # a billion-record corpus must not grow one counter per distinct message
    path = tmp_path / "scored.jsonl"
    lines = [json.dumps({"texts": ["a\n"], "scores": [-i - 1]}) for i in range(50)] + ["{" * i for i in range(1, 50)]
    path.write_text("\n".join(lines) + "\n")
    stats = SourceStats()
    assert list(read_scored(path, stats, on_bad="skip")) == []
    assert stats.skipped == {"score NaN, infinite, negative or not a number": 50, "malformed JSON": 49}


def test_validate_record_fills_in_avg_score():
    # the plain mean of the segment scores, as in the paper's scored datasets
    record = ScoredRecord.from_json({"texts": ["ab", "cdef"], "scores": [0.0, 1.0]}, "x")
    assert record.avg_score == 0.5 and record.meta == {}


# --- raw corpora ---------------------------------------------------------------------

RAW_JSONL = [
    ("malformed JSON", b'{"text": "x = 1\\n"', "malformed JSON", ["malformed JSON"]),
    ("missing text field", b'{"body": "x = 1\\n"}', "field 'text' missing or not a string", ["'text'"]),
    ("text not a string", b'{"text": 5}', "field 'text' missing or not a string", ["'text'"]),
    ("non-UTF-8 bytes", b'{"text": "caf\xe9"}', "not UTF-8", ["not valid UTF-8"]),
    ("lone surrogate", b'{"text": "a\\udc80b"}', "not UTF-8", ["'text'", "surrogate"]),
    ("meta not an object", b'{"text": "x\\n", "meta": 3}', "field 'meta' invalid", ["'meta'"]),
]


@pytest.mark.parametrize("name,line,reason,words", RAW_JSONL, ids=[c[0] for c in RAW_JSONL])
def test_bad_jsonl_document_error_or_counted_skip(tmp_path, name, line, reason, words):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "a = 1\\n"}\n' + line + b'\n{"text": "b = 2\\n"}\n')
    cfg = DataConfig(source="jsonl", path=str(path))
    with pytest.raises(DataError) as e:
        list(iter_documents(cfg))
    assert str(e.value).startswith(f"{path}:2:") and all(w in str(e.value) for w in words), str(e.value)
    stats = SourceStats()
    docs = list(iter_documents(cfg, stats, on_bad="skip"))
    assert [d["text"] for d in docs] == ["a = 1\n", "b = 2\n"]
    assert [d["meta"]["line"] for d in docs] == [1, 3]
    assert stats.skipped == {reason: 1} and stats.records_in == 3


def test_empty_documents_and_blank_lines_are_counted_skips_under_either_policy(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a\\n"}\n{"text": ""}\n\n{"text": "  \\n"}\n{"text": "b\\n"}\n')
    for policy in ("error", "skip"):
        stats = SourceStats()
        docs = list(iter_documents(DataConfig(source="jsonl", path=str(path)), stats, on_bad=policy))
        assert [d["text"] for d in docs] == ["a\n", "b\n"]
        assert stats.skipped == {"empty document": 2, "blank line": 1} and stats.records_in == 5


def test_directory_sources(tmp_path):
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "latin1.py").write_bytes(b"s = 'caf\xe9'\n")
    cfg = DataConfig(source="dir", path=str(tmp_path), glob="*.py")
    with pytest.raises(DataError, match=r"latin1\.py: not valid UTF-8 \(byte 8\)"):
        list(iter_documents(cfg))
    stats = SourceStats()
    docs = list(iter_documents(cfg, stats, on_bad="skip"))
    assert [d["meta"]["path"] for d in docs] == [str(tmp_path / "good.py")]
    assert stats.skipped == {"empty document": 1, "not UTF-8": 1} and stats.records_in == 3


def test_missing_inputs_raise_before_any_document(tmp_path):
    # no matching files / no directory / no file: raised when the source is opened
    with pytest.raises(DataError, match="no files match '\\*.py'"):
        iter_documents(DataConfig(source="dir", path=str(tmp_path), glob="*.py"))
    with pytest.raises(DataError, match="directory not found"):
        iter_documents(DataConfig(source="dir", path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="file not found"):
        iter_documents(DataConfig(source="jsonl", path=str(tmp_path / "nope.jsonl")))
    # a local-looking path for a datasets source is never sent to the hub
    with pytest.raises(DataError, match="not found"):
        iter_documents(DataConfig(source="hf", path=str(tmp_path / "nope.parquet")))
    with pytest.raises(DataError, match="file not found"):
        read_scored(tmp_path / "nope.jsonl")


def test_ten_megabyte_single_line_document_is_read_and_scored_whole(tmp_path):
    big = "x = '" + "a" * (10 * 1024 * 1024) + "'"
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["a = 1\n", big, "b = 2\n"]) + "\n")
    docs = list(iter_documents(DataConfig(source="jsonl", path=str(path))))
    assert [len(d["text"]) for d in docs] == [6, len(big), 6]
    out = tmp_path / "scored.jsonl"
    summary = score_corpus(docs, str(out), "test_reliability_input:zero_per_line", num_workers=1)
    assert summary.documents == 3 and summary.failed_documents == 0
    records = list(read_scored(out))
    assert records[1].document == big


def zero_per_line(texts):
    """A fast scorer for the big-document test."""
    return [0.0 for _ in texts]


def test_ten_megabyte_line_that_pycodestyle_cannot_finish_is_a_counted_timeout(tmp_path):
    # pycodestyle is quadratic on a line of many short tokens: it would run for hours
    big = "x = 1 " * (10 * 1024 * 1024 // 6) + "\n"
    docs = [{"text": t, "meta": {"i": i}} for i, t in enumerate(["a = 1\n", big, "b = 2\n"])]
    out = tmp_path / "scored.jsonl"
    summary = score_corpus(docs, str(out), "pep8", num_workers=1, chunk_size=1, time_limit=1.0)
    assert summary.documents == 2 and summary.failures == {"timeout": 1} and summary.documents_in == 3
    failed = [json.loads(x) for x in (tmp_path / "scored.jsonl.failures.jsonl").read_text().splitlines()]
    assert failed == [{"index": 1, "reason": "timeout", "detail": "over the 1 s time limit", "meta": {"i": 1}}]


def test_invalid_python_files_are_scored_not_lost(tmp_path):
    sources = {"ok.py": "x = 1\n", "syntax.py": "def f(:\n    return )\n", "tokenize.py": "s = '''open\n",
               "tabs.py": "if x:\n\tpass\n        pass\n", "nul.py": "a = 1\x00\n", "cont.py": "x = (\\\n"}
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    cfg = DataConfig(source="dir", path=str(tmp_path), glob="*.py")
    out = tmp_path / "out" / "scored.jsonl"
    summary = score_corpus(iter_documents(cfg), str(out), "pep8", num_workers=1)
    records = list(read_scored(out))
    assert summary.documents == len(sources) == len(records) and summary.failed_documents == 0
    by_name = {r.meta["path"].rsplit("/", 1)[1]: r for r in records}
    for name, text in sources.items():
        assert by_name[name].document == text
    assert sum(by_name["syntax.py"].scores) > 0


def test_cli_score_on_bad_record_policies_and_counts_in_the_summary(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"text": "a = 1\\n"}\n{"text": \n{"body": "x"}\n{"text": ""}\n{"text": "b=2\\n"}\n')
    out = tmp_path / "scored.jsonl"
    base = ["score", "tasks/pep8", "data.source=jsonl", f"data.path={corpus}", f"data.scored_path={out}", "-j", "1"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert f"{corpus}:2: malformed JSON" in err and "Traceback" not in err
    assert main([*base, "--on-bad-record", "skip", "--restart"]) == 0
    summary = json.loads((tmp_path / "scored.jsonl.summary.json").read_text())
    assert summary["source_skipped"] == {"malformed JSON": 1, "field 'text' missing or not a string": 1,
                                         "empty document": 1}
    assert summary["source_records_in"] == 5 == summary["documents"] + sum(summary["source_skipped"].values())


# --- configs -------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("training.learnin_rate=1e-3",
     "unknown config key 'training.learnin_rate'; did you mean 'training.learning_rate'?"),
    ("objectiv.name=mle", "unknown config key 'objectiv'; did you mean 'objective'?"),
    ("training.block_size=big", "training.block_size: input should be a valid integer, unable to parse string "
                                "as an integer, got 'big'"),
    ("training.block_size=true", "training.block_size: input should be a valid integer, unable to parse string "
                                 "as an integer, got 'true'"),
    ("objective={name: filtering, threshold: [1]}", "objective.threshold: input should be a valid number, got [1]"),
    ("objective={name: filtering, threshold: -0.1}",
     "objective.threshold: input should be greater than or equal to 0, got -0.1"),
    ("objective.alpha=0.5", "unknown config key 'objective.alpha' (objective 'mle' takes: name)"),
    ("task.thresholds={conditional: -1}", "task.thresholds.conditional: must be >= 0 (scores are >= 0)"),
    ("task.thresholds={condtional: 0}", "task.thresholds.condtional: not an objective"),
    ("objective={name: conditional, drop_token_fraction: 1.5}",
     "objective.drop_token_fraction: input should be less than or equal to 1, got 1.5"),
    ("data.heldout_fraction=1", "data.heldout_fraction: input should be less than 1, got 1"),
    ("objective={name: unlikelihood, percentile: 101}",
     "objective.percentile: input should be less than or equal to 100, got 101"),
    ("training.warmup_ratio=-0.1", "training.warmup_ratio: input should be greater than or equal to 0, got -0.1"),
    ("eval.top_p=0", "eval.top_p: input should be greater than 0, got 0"),
    ("training.num_tokens=1000", "training.num_tokens: 1000 is smaller than one batch ("),
    ("training.save_steps=0", "training.save_steps: input should be greater than or equal to 1, got 0"),
    ("data.max_documents=0", "data.max_documents: input should be greater than 0, got 0"),
    ("training.learning_rate=.inf", "training.learning_rate: input should be a finite number, got inf"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(["tasks/pep8", "models/tiny"], [override])
    assert message in str(e.value) and len(e.value.problems) == 1, str(e.value)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_awr_alpha_outside_unit_interval_is_rejected(alpha):
    with pytest.raises(ConfigError, match=r"objective.alpha: input should be (greater|less) than or equal to [01]"):
        load_config(["objectives/awr"], [f"objective.alpha={alpha}"])
    load_config(["objectives/unlikelihood"], ["objective.alpha=1.5"])  # unlikelihood's weight may exceed 1


def test_every_config_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config([], ["training.lr=1", "eval.top_p=x", "model.presett=tiny"])
    assert len(e.value.problems) == 3 and str(e.value).startswith("3 config problems:")
    with pytest.raises(ConfigError) as e:
        load_config([], ["objective.name=filtering", "objective.threshold=-1", "objective.beta=0",
                         "training.learning_rate=0"])
    assert len(e.value.problems) == 3


def test_values_as_a_user_writes_them():
    cfg = load_config([], ["objective.name=filtering", "objective.threshold=5e-4", "training.num_tokens=2e6",
                           "training.learning_rate=1e-3", "data.glob=*.txt"])
    assert cfg.objective.threshold == 5e-4 and cfg.training.num_tokens == 2_000_000
    assert isinstance(cfg.training.num_tokens, int)
    assert cfg.data.glob == "*.txt"  # not YAML (an alias): the plain string


def test_config_naming_missing_files(tmp_path, capsys):
    with pytest.raises(ConfigError, match="config file not found: 'objectives/conditionl'"):
        load_config(["objectives/conditionl"])
    cfg = load_config([], [f"data.scored_path={tmp_path}/none.jsonl", f"tokenizer.path={tmp_path}/tok",
                           f"model.path={tmp_path}/model"])
    with pytest.raises(ConfigError) as e:
        check_paths(cfg)
    assert len(e.value.problems) == 3
    assert f"data.scored_path: {tmp_path}/none.jsonl not found (run `phf score` first?)" in str(e.value)
    # through the CLI: one line, no traceback, before any work (no run directory made)
    run = tmp_path / "run"
    assert main(["train", f"data.scored_path={tmp_path}/none.jsonl", f"training.output_dir={run}"]) == 2
    assert "none.jsonl not found" in capsys.readouterr().err and not run.exists()
    # a hub name is the user's explicit choice: not checked here
    check_paths(load_config([], ["model.path=gpt2", "tokenizer.path=openai-community/gpt2",
                                 f"data.scored_path={tmp_path}/none.jsonl"]), training=False)


def test_scored_path_takes_several_files_a_glob_or_a_folder_of_shards(tmp_path):
    shards = tmp_path / "scored"
    shards.mkdir()
    for i in range(3):
        (shards / f"shard-{i}.jsonl").write_text(
            json.dumps({"texts": [f"x = {i}\n"], "scores": [0.0], "meta": {"i": i}}) + "\n")
    # what `phf score` leaves beside the records: failure lists and state, never records
    (shards / "shard-1.failures.jsonl").write_text(json.dumps({"index": 0, "reason": "timeout"}) + "\n")
    (shards / "failures.jsonl").write_text("")
    (shards / "state.json").write_text("{}")
    assert [r.meta["i"] for r in read_scored(shards)] == [0, 1, 2]
    assert [r.meta["i"] for r in read_scored(str(shards / "shard-[02].jsonl"))] == [0, 2]
    assert [r.meta["i"] for r in read_scored([shards / "shard-2.jsonl", shards / "shard-0.jsonl"])] == [2, 0]
    with pytest.raises(DataError, match="no files match"):
        read_scored(str(shards / "nothing-*.jsonl"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .parquet or .jsonl files"):
        read_scored(empty)
    cfg = load_config([], [f"data.scored_path=[{shards / 'shard-0.jsonl'}, {shards / 'shard-1.jsonl'}]"])
    assert [r.meta["i"] for r in read_scored(cfg.data.scored_path)] == [0, 1]
