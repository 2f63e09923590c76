"""The Ray engine (`phf score --engine ray`, `phf pack`) against the local engine.

A real local Ray instance (2 CPUs, no dashboard, a small object store, bound to
127.0.0.1) is started once for the module; the two-node test starts its own cluster
of two `ray start` nodes on 127.0.0.1 and drives it through the CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

# Ray rewrites a loopback node address to the machine's routable one, except in its
# single-machine mode; the module's local instance runs in that mode, so that it
# listens on 127.0.0.1 only (the two-node test's `ray start` nodes cannot: see there)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from phf.data.config import DataConfig  # noqa: E402
from phf.data.packing import PackSpec, pack  # noqa: E402
from phf.records import read_scored  # noqa: E402
from phf.data.scoring import score_corpus  # noqa: E402
from phf.data.sources import iter_documents, stdlib_dir  # noqa: E402
from phf.errors import DataError  # noqa: E402
from phf.engines.ray_scoring import score_corpus_ray  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: real standard-library modules, small enough that a shard of them scores in about a second
MODULES = ["json/decoder.py", "json/encoder.py", "json/scanner.py", "json/tool.py", "csv.py", "fnmatch.py",
           "glob.py", "heapq.py", "keyword.py", "linecache.py", "opcode.py", "shlex.py", "stat.py", "string.py",
           "textwrap.py", "this.py", "token.py", "tty.py", "uu.py", "colorsys.py", "bisect.py", "abc.py"]


@pytest.fixture(scope="module")
def ray_local():
    # workers are started from this process's environment: let them import this checkout of phf
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder of real Python modules (one of them twice, under another name)."""
    root = tmp_path_factory.mktemp("corpus")
    for name in MODULES:
        src = stdlib_dir() / name
        if src.exists():
            shutil.copy(src, root / name.replace("/", "_"))
    (root / "empty.py").write_text("")  # a counted skip of the source, in both engines
    assert len(list(root.glob("*.py"))) >= 12
    return root


def local_records(data: DataConfig, out: Path, scorer: str = "pep8", scorer_args: dict | None = None,
                  counting: dict | None = None):
    counting = counting or {}
    summary = score_corpus(iter_documents(data), str(out), scorer, scorer_args, num_workers=1, **counting)
    return list(read_scored(out)), summary


def ray_records(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("shard-*.parquet")) for r in read_scored(p)]


def by_meta(records):
    return sorted(records, key=lambda r: json.dumps(r.meta, sort_keys=True))


#: what both engines' summaries count: filtering's removals at the paper's PEP8 threshold too
COUNTING = {"document_thresholds": {"filtering": 0.002361}}
SUMMARY_COUNTS = ("documents", "segments", "characters", "misaligned_segments", "failed_documents", "failures",
                  "removed_by_threshold",
                  "documents_in")


def assert_same_summary(ray_summary, local_summary):
    a, b = ray_summary.to_dict(), local_summary.to_dict()
    assert {k: a[k] for k in SUMMARY_COUNTS} == {k: b[k] for k in SUMMARY_COUNTS}
    assert a["mean_segment_score"] == pytest.approx(b["mean_segment_score"], rel=1e-12)
    assert a["mean_document_score"] == pytest.approx(b["mean_document_score"], rel=1e-12)


@pytest.fixture(scope="module")
def scored_on_ray(ray_local, corpus, tmp_path_factory):
    """The corpus scored with pep8 on Ray, in several shards, and by the local engine."""
    tmp = tmp_path_factory.mktemp("scored")
    data = DataConfig(source="dir", path=str(corpus))
    result = score_corpus_ray(data, tmp / "ray", "pep8", shard_bytes=40_000, source={"test": 1}, **COUNTING)
    local, summary = local_records(data, tmp / "local.jsonl", counting=COUNTING)
    assert summary.removed_by_threshold["filtering"]["removed_documents"] > 0  # the count is not vacuous
    return tmp / "ray", result, local, summary, data


def test_ray_scoring_matches_the_local_engine(scored_on_ray):
    out, result, local, local_summary, _ = scored_on_ray
    assert result.shards >= 4  # several shards, scored by two workers
    records = ray_records(out)
    # the shards in name order are the corpus order; sorted by meta, any order is the same
    assert records == local
    assert by_meta(records) == by_meta(local)
    assert_same_summary(result.summary, local_summary)
    assert result.source.skipped == {"empty document": 1}
    assert sum(1 for _ in out.glob("shard-*.done.json")) == result.shards


def test_ray_scoring_of_a_saved_dataset_in_row_shards(ray_local, tmp_path):
    """A `datasets` dataset cut into row ranges: same records (and dataset indices) as the
    local engine, with the toxicity scorer's default (CPU) backend."""
    import datasets

    texts = [f"Sentence {i} is fine. This one is about idiots and damn fools number {i}!" if i % 3 == 0
             else f"A calm sentence number {i}. Another calm one." for i in range(22)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    data = DataConfig(source="hf", path=str(tmp_path / "ds"))
    result = score_corpus_ray(data, tmp_path / "ray", "toxicity", shard_rows=6)
    local, summary = local_records(data, tmp_path / "local.jsonl", "toxicity")
    assert result.shards == 4
    assert ray_records(tmp_path / "ray") == local
    assert [r.meta["index"] for r in local] == list(range(22))
    assert_same_summary(result.summary, summary)
    assert summary.misaligned_segments > 0  # the scorer did see toxic sentences


PROSE = ["The weather is calm today. We walked to the river.", "You are an idiot! Nobody likes your damn code.",
         "Thanks for the review. I fixed the typo.", "Shut up. This is the worst, stupid idea ever!",
         "A short note. Another short note. And a third.", "Lunch is at noon. Bring the slides."]


def test_model_scorer_runs_on_an_actor_pool(ray_local, tiny_tokenizer, tmp_path):
    """A transformers classifier (toxicity's hf backend) on two actors that each load it
    once; three JSONL shards; each shard's records equal the local engine's on that file."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                        num_labels=2, id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1},
                        pad_token_id=tiny_tokenizer.pad_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    tiny_tokenizer.save_pretrained(tmp_path / "clf")
    (tmp_path / "in").mkdir()
    for i in range(3):
        with open(tmp_path / "in" / f"part-{i}.jsonl", "w") as f:
            for j, text in enumerate(PROSE):
                f.write(json.dumps({"text": f"{text} (part {i}, {j})"}) + "\n")
    args = {"backend": "hf", "model": str(tmp_path / "clf"), "batch_size": 4}
    result = score_corpus_ray(DataConfig(source="jsonl", path=str(tmp_path / "in")), tmp_path / "ray", "toxicity",
                              args, actors=2, gpus_per_actor=0)
    assert result.shards == 3 and result.summary.documents == 18
    for i in range(3):
        local, _ = local_records(DataConfig(source="jsonl", path=str(tmp_path / "in" / f"part-{i}.jsonl")),
                                 tmp_path / f"local-{i}.jsonl", "toxicity", args)
        assert read_scored_list(tmp_path / "ray" / f"shard-{i:05d}.parquet") == local
        assert len({round(x, 6) for r in local for x in r.scores}) > 1  # a real model's varied scores
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "ray").glob("shard-*.done.json")}
    assert 1 <= len(pids) <= 2
    # the actors were ended with the run (task workers stay alive, idle, in the pool).
    # ray.kill is asynchronous: on a loaded machine the process can take seconds to exit.
    deadline = time.time() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_scorer_that_cannot_be_built_is_reported_in_its_own_words(ray_local, corpus, tmp_path):
    """On an actor (a model scorer) and in a task: the scorer's error, not Ray's error with
    the worker's traceback (and not after the actor was restarted MAX_RETRIES times)."""
    from phf.data.scoring import ScorerStartError

    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "A sentence to score."}) + "\n")
    with pytest.raises(ScorerStartError, match="cannot load the sequence-classification model .*no-such-model") as e:
        score_corpus_ray(DataConfig(source="jsonl", path=str(tmp_path / "in.jsonl")), tmp_path / "ray", "toxicity",
                         {"backend": "hf", "model": str(tmp_path / "no-such-model")}, actors=1, gpus_per_actor=0)
    assert e.type is ScorerStartError and "Traceback" not in str(e.value)
    with pytest.raises(ScorerStartError, match="max_line_lenght") as e:
        score_corpus_ray(DataConfig(source="dir", path=str(corpus)), tmp_path / "ray2", "pep8",
                         {"max_line_lenght": 100}, shard_bytes=40_000)
    assert e.type is ScorerStartError and "Traceback" not in str(e.value)


def read_scored_list(path: Path) -> list[dict]:
    return list(read_scored(path))


def test_rerun_skips_completed_shards_and_refuses_other_settings(scored_on_ray, tmp_path):
    src, first, local, _, data = scored_on_ray
    out = tmp_path / "ray"
    shutil.copytree(src, out)
    # an interrupted run: one shard was never committed
    (out / "shard-00001.done.json").unlink()
    (out / "shard-00001.parquet").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    again = score_corpus_ray(data, out, "pep8", shard_bytes=40_000, source={"test": 1})
    assert again.resumed_shards == first.shards - 1
    assert (out / "shard-00001.done.json").exists()
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept  # the others were not rewritten
    assert ray_records(out) == local
    assert again.summary.documents_in == first.summary.documents_in
    with pytest.raises(DataError, match="scorer_args"):
        score_corpus_ray(data, out, "pep8", {"max_line_length": 100}, shard_bytes=40_000, source={"test": 1})
    with pytest.raises(DataError, match="source"):
        score_corpus_ray(data, out, "pep8", shard_bytes=40_000, source={"test": 2})
    with pytest.raises(DataError, match="shard plan"):
        score_corpus_ray(data, out, "pep8", shard_bytes=80_000, source={"test": 1})


def _task_pids(name: str) -> list[int]:
    """PIDs of Ray worker processes running a task of this name (Ray sets the process title)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if line.split(None, 1)[1:] and line.split(None, 1)[1].startswith(f"ray::{name}")]


def test_a_killed_worker_still_ends_in_complete_output(ray_local, corpus, tmp_path):
    data = DataConfig(source="dir", path=str(corpus))
    outcome = {}

    def run():
        try:
            outcome["result"] = score_corpus_ray(data, tmp_path / "ray", "pep8", shard_bytes=20_000)
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        pids = _task_pids("_score_shard_task")
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "no scoring task was seen running"
    assert thread.is_alive()  # the kill happened mid-run
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    local, summary = local_records(data, tmp_path / "local.jsonl")
    assert ray_records(tmp_path / "ray") == local
    assert_same_summary(outcome["result"].summary, summary)


def test_pack_on_ray_matches_local_pack_per_shard(ray_local, scored_on_ray, tiny_tokenizer, tmp_path):
    from phf.data.packed_shards import ShardedPackedDataset, shard_spec
    from phf.engines.ray_packing import pack_shards_ray
    from phf.records import scored_files
    from phf.tokenizer import add_control_tokens

    tok = tiny_tokenizer
    add_control_tokens(tok)
    shards = scored_files(scored_on_ray[0])
    assert [p.name for p in shards] == sorted(p.name for p in scored_on_ray[0].glob("shard-*.parquet"))
    spec = PackSpec(block_size=64, objective="conditional", threshold=0.0, drop_token_fraction=0.2,
                    heldout_fraction=0.2, seed=7)
    out = tmp_path / "packed"
    totals = pack_shards_ray(shards, tok, spec, out)
    assert totals["packed"] == len(shards) and totals["blocks"]["train"] > 0
    for i, shard in enumerate(shards):
        # the same call on one machine: the local packer, the same shard, the shard's seed
        pack(read_scored(shard), tok, replace(spec, seed=spec.seed + i), tmp_path / f"local-{i}")
        for name in ("train.ids", "train.scores", "heldout.ids", "heldout.scores"):
            assert (out / f"pack-{i:05d}" / name).read_bytes() == (tmp_path / f"local-{i}" / name).read_bytes(), name
    data = ShardedPackedDataset(out, "train")
    assert len(data) == totals["blocks"]["train"]
    last = data[len(data) - 1]["input_ids"].numpy()
    tail = np.fromfile(out / f"pack-{len(shards) - 1:05d}" / "train.ids", dtype=np.uint32)[-64:]
    assert (last == tail).all()
    # a rerun skips every shard; a run with another spec needs --restart
    assert pack_shards_ray(shards, tok, spec, out)["skipped"] == len(shards)
    with pytest.raises(DataError, match="spec"):
        pack_shards_ray(shards, tok, replace(spec, block_size=32), out)
    with pytest.raises(DataError, match="block_size"):  # training refuses blocks of another size
        ShardedPackedDataset(out, "train", expected_spec={**shard_spec(out / "pack-00000"), "block_size": 32})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(port: int) -> list[int]:
    """The processes of the cluster whose GCS listens on `port`: those that name the port
    or the cluster's session folder on their command line, and their descendants."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(d.name)] = (ppid, cmd)
    named = re.compile(rf"(gcs_server_port=|address=[\d.]+:){port}\b")
    sessions = {m.group(1) for _, cmd in procs.values() if named.search(cmd)
                for m in [re.search(r"--session-dir=(\S+)", cmd)] if m}
    tree = {pid for pid, (_, cmd) in procs.items() if named.search(cmd) or any(s in cmd for s in sessions)}
    while grown := {pid for pid, (ppid, _) in procs.items() if ppid in tree} - tree:
        tree |= grown
    return sorted(tree)


@pytest.mark.slow
def test_two_node_cluster_scores_a_corpus(corpus, tmp_path):
    """Two `ray start` nodes of one CPU each; `phf score --engine ray --address` from another
    process; the records equal the local engine's.

    The cluster runs in a network namespace of its own with only loopback (`unshare -n`):
    a multi-node Ray 2.60 cluster advertises each node at the machine's routable address
    even when given 127.0.0.1 (ray.scripts.scripts: resolve_ip_for_localhost), and no
    test of ours sends traffic to any address but loopback."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -n` (a network namespace with only loopback) for the two-node cluster")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
           # a cluster of `ray start` nodes uses token authentication: this test's own
           # token, given to every process of the cluster and to the driver
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = "--num-cpus=1 --node-ip-address=127.0.0.1 --disable-usage-stats --object-store-memory=100000000"
    out = tmp_path / "ray"
    script = "\n".join([
        "set -e", "ip link set lo up",
        f"{ray_bin} start --head --port={port} --include-dashboard=false {common} > /dev/null",
        f"{ray_bin} start --address={address} {common} > /dev/null",
        f"{sys.executable} -m phf.cli score data.source=dir data.path={corpus} --engine ray --address {address} "
        f"--shard-mb 0.04 -o {out}"])
    try:
        run = subprocess.run(["unshare", "-n", "bash", "-c", script], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(Path(f"{out}.summary.json").read_text())
        nodes = {json.loads(p.read_text())["pid"] for p in out.glob("shard-*.done.json")}
    finally:
        # only this cluster's processes (`ray stop` would end every Ray session on the machine)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _cluster_pids(port):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1)
        # what `ray stop` also removes: the address that a plain ray.init() would join
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
    local, summary = local_records(DataConfig(source="dir", path=str(corpus)), tmp_path / "local.jsonl")
    assert ray_records(out) == local
    assert report["documents_in"] == summary.documents_in and report["shards"] >= 4
    assert len(nodes) >= 2  # the shards were scored by more than one worker process


def test_phf_pack_then_train_reads_the_packed_shards(ray_local, scored_on_ray, tiny_tokenizer, tmp_path):
    """`phf pack` on the Ray shards, then `phf train data.packed_path=...`: training reads
    every packed shard (it packs nothing itself) and refuses shards packed otherwise."""
    from phf.cli import main
    from phf.config import ConfigError
    from tiny_runs import TINY, tiny_config
    from phf.train import train

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    settings = ["tasks/pep8", "objectives/conditional", "models/tiny", *TINY, f"tokenizer.path={tmp_path / 'tok'}",
                "eval.every_steps=0"]
    assert main(["pack", *settings, "-i", str(scored_on_ray[0]), "-o", str(tmp_path / "packed")]) == 0
    folders = sorted(p.name for p in (tmp_path / "packed").glob("pack-*"))
    assert len(folders) == scored_on_ray[1].shards
    extra = [f"tokenizer.path={tmp_path / 'tok'}", f"data.packed_path={tmp_path / 'packed'}", "eval.every_steps=0"]
    run = train(tiny_config(tmp_path / "missing.jsonl", tmp_path / "run", "conditional", extra))
    assert json.loads((run / "train_summary.json").read_text())["steps"] >= 1
    assert not (run / "data" / "train.ids").exists()  # nothing packed by the run
    # the held-out loss reads the held-out blocks of every packed shard
    from phf.data.packing import PackedDataset
    from phf.evaluation.evaluate import heldout_dataset, heldout_loss
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    heldout = heldout_dataset(run, load_tokenizer(str(run)))
    expected = sum(len(PackedDataset(f, "heldout")) for f in (tmp_path / "packed").glob("pack-*"))
    assert expected > 0 and heldout is not None and len(heldout) == expected
    assert 0 < heldout_loss(load_model(str(run)), heldout, progress=False) < 20
    with pytest.raises(DataError, match="block_size"):
        train(tiny_config(tmp_path / "missing.jsonl", tmp_path / "run2", "conditional",
                          [*extra, "training.block_size=32"]))
    with pytest.raises(ConfigError, match="data.packed_path"):
        train(tiny_config(tmp_path / "missing.jsonl", tmp_path / "run3", "conditional",
                          [*extra, f"data.packed_path={tmp_path / 'nothing-here'}"]))


def test_cli_scores_a_glob_of_jsonl_files(ray_local, code_texts, tmp_path, capsys):
    """`phf score --engine ray` on a glob of JSONL files: one shard per file, the summary
    file beside the output folder, and a clear error for an output file name."""
    from phf.cli import main

    (tmp_path / "in").mkdir()
    for i in range(2):
        with open(tmp_path / "in" / f"part-{i}.jsonl", "w") as f:
            for text in code_texts[i * 3:(i + 1) * 3]:
                f.write(json.dumps({"text": text[:3000]}) + "\n")
            f.write("\n")  # a blank line: a counted skip
    argv = ["score", "data.source=jsonl", f"data.path={tmp_path / 'in'}/part-*.jsonl", "--engine", "ray"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out.summary.json").read_text())
    assert report["shards"] == 2 and report["documents"] == 6 and report["documents_in"] == 6
    assert report["source_skipped"] == {"blank line": 2}
    local, _ = local_records(DataConfig(source="jsonl", path=str(tmp_path / "in" / "part-1.jsonl")),
                             tmp_path / "local.jsonl")
    assert list(read_scored(tmp_path / "out" / "shard-00001.parquet")) == local
    assert main([*argv, "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "folder" in capsys.readouterr().err
    # a malformed record stops the run with the file and line (as the local engine does)
    with open(tmp_path / "in" / "part-1.jsonl", "a") as f:
        f.write('{"text": "no end\n')
    assert main([*argv, "-o", str(tmp_path / "bad"), "--restart"]) == 2
    assert f"{tmp_path / 'in' / 'part-1.jsonl'}:5: malformed JSON" in capsys.readouterr().err


def test_failed_documents_are_counted_and_listed(ray_local, corpus, tmp_path):
    """A per-document time limit that no document meets: every document is a "timeout"
    failure in both engines, listed with its shard and meta; documents in = out + failed."""
    data = DataConfig(source="dir", path=str(corpus))
    result = score_corpus_ray(data, tmp_path / "ray", "pep8", time_limit=1e-6, shard_bytes=40_000)
    local = score_corpus(iter_documents(data), str(tmp_path / "local.jsonl"), "pep8", num_workers=1, time_limit=1e-6)
    assert result.summary.failures == local.failures == {"timeout": local.documents_in}
    assert result.summary.documents == 0 and result.summary.documents_in == local.documents_in
    listed = [json.loads(line) for line in (tmp_path / "ray" / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["meta"]["path"] for f in listed) == sorted(d["meta"]["path"] for d in iter_documents(data))
    assert {f["shard"] for f in listed} == {f"{i:05d}" for i in range(result.shards)}
    assert not list((tmp_path / "ray").glob("shard-*.parquet"))  # no records, no record files
