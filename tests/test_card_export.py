"""The model card (README.md in a run folder, `phf card`) and `phf export`, on a tiny
trained and evaluated conditional run."""

import json
import shutil

import pytest
import yaml
from tiny_runs import scored_corpus, tiny_config, train_tiny

from phf.card import ALIGNED, MISALIGNED, attribute_tokens, front_matter, render_card, suppresses_tokens
from phf.cli import main
from phf.export import PICKLE_SUFFIXES, export_run

FAST = ["eval.every_steps=0"]


def split_card(text: str) -> tuple[dict, str]:
    """(front matter, body) of a model card."""
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


@pytest.fixture(scope="module")
def run(tmp_path_factory, code_texts):
    """A tiny conditional run, trained (which writes its card) and not yet evaluated."""
    root = tmp_path_factory.mktemp("card")
    scored = scored_corpus(root / "scored.jsonl", code_texts)
    return {"scored": scored, "dir": train_tiny(scored, root / "conditional", "conditional", FAST)}


@pytest.fixture(scope="module")
def evaluated(run):
    from phf.evaluation.evaluate import evaluate_run

    cfg = tiny_config(run["scored"], run["dir"], "conditional", FAST)
    card_before = (run["dir"] / "README.md").read_text()
    results = evaluate_run(run["dir"], cfg.eval, cfg.task)
    return {**run, "results": results, "card_before": card_before}


def test_train_writes_the_card_and_eval_rewrites_it_with_the_results(evaluated):
    summary = json.loads((evaluated["dir"] / "train_summary.json").read_text())
    meta, before = split_card(evaluated["card_before"])
    assert meta["library_name"] == "transformers"
    assert meta["tags"][:4] == ["phf", "pretraining-with-human-feedback", "conditional", "pep8"]
    assert "license" not in meta and "datasets" not in meta  # a stdlib corpus is no hub dataset
    assert "Not evaluated yet" in before
    assert f"| tokens seen | {summary['tokens_seen']:,} " in before
    assert f"| seed | {summary['seed']} |" in before
    assert "`<|aligned|>`" in before and "`<|misaligned|>`" in before

    _, after = split_card((evaluated["dir"] / "README.md").read_text())
    results = evaluated["results"]
    assert "Not evaluated yet" not in after
    lo, hi = results["misalignment_ci"]
    row = next(line for line in after.splitlines() if line.startswith("| misalignment |"))
    assert f"{results['misalignment']:.4g}" in row and f"[{lo:.4g}, {hi:.4g}]" in row
    assert any(line.startswith("| functions |") for line in after.splitlines())  # the prompted scenario


def test_phf_card_rewrites_a_deleted_card_identically(evaluated, capsys):
    card = evaluated["dir"] / "README.md"
    text = card.read_text()
    card.unlink()
    assert main(["card", str(evaluated["dir"])]) == 0
    assert card.read_text() == text == render_card(evaluated["dir"])


def test_decoding_mode_in_results_appears_in_the_card(evaluated, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(evaluated["dir"], copy, ignore=shutil.ignore_patterns("checkpoints", "data", "samples"))
    results = json.loads((copy / "results.json").read_text())
    results["decoding"] = {"mode": "guidance", "scale": 2.0, "negative": "misaligned", "label": "guidance:2"}
    (copy / "results.json").write_text(json.dumps(results))
    card = render_card(copy)
    assert "Decoding mode: `guidance:2`" in card and 'max_new_tokens=64, decoding="guidance:2")' in card


def test_export_loads_with_plain_transformers_and_generates_aligned_text(evaluated, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "export"
    exported = export_run(evaluated["dir"], out)
    names = {p.name for p in exported}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert not any(p.suffix in PICKLE_SUFFIXES for p in out.rglob("*"))
    assert not {"checkpoints", "data", "samples", "train_summary.json", "optimizer.pt"} & names
    assert all(p.is_file() and not p.is_symlink() for p in exported)
    meta, body = split_card((out / "README.md").read_text())
    assert meta["library_name"] == "transformers" and "conditional" in meta["tags"]
    assert "| misalignment |" in body

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    aligned, misaligned = tok.convert_tokens_to_ids([ALIGNED, MISALIGNED])
    assert aligned != tok.unk_token_id and misaligned != tok.unk_token_id
    # the card's recipe: start after <|aligned|>; the exported generation config already
    # forbids <|misaligned|>, so plain generate needs nothing else
    assert suppresses_tokens(out) and "already keeps the model from emitting `<|misaligned|>`" in body
    ids = tok([tok.eos_token + ALIGNED] * 8, return_tensors="pt").input_ids
    torch.manual_seed(0)
    new = model.generate(ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=32, min_new_tokens=32,
                         pad_token_id=tok.eos_token_id)[:, ids.shape[1]:]
    assert new.shape == (8, 32)
    assert misaligned not in new.tolist()[0] and not (new == misaligned).any()


def test_export_refuses_an_unfinished_run_and_a_non_empty_folder(evaluated, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(evaluated["dir"], unfinished, ignore=shutil.ignore_patterns("checkpoints", "data", "samples"))
    (unfinished / "train_summary.json").unlink()
    assert main(["export", str(unfinished), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "training did not finish (no train_summary.json)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["export", str(evaluated["dir"]), str(busy)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"
    assert main(["export", str(evaluated["dir"]), str(busy), "--overwrite"]) == 0
    assert not (busy / "notes.txt").exists() and (busy / "model.safetensors").is_file()

    assert main(["export", str(evaluated["dir"]), str(evaluated["dir"] / "inside")]) == 2
    assert "may not be the run folder" in capsys.readouterr().err


def test_an_awr_export_leaves_the_value_head_in_the_run(run, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    awr = train_tiny(run["scored"], tmp_path / "awr", "awr", FAST)
    with safe_open(str(awr / "model.safetensors"), framework="pt") as f:
        assert any(k.startswith("value_head.") for k in f.keys())  # the run keeps its critic
    out = tmp_path / "export"
    export_run(awr, out)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("value_head.") for k in keys)
    assert "phf_value_head" not in json.loads((out / "config.json").read_text())
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    with safe_open(str(awr / "model.safetensors"), framework="pt") as f:
        assert any(k.startswith("value_head.") for k in f.keys())


def test_export_refuses_a_run_whose_weights_are_pickled(evaluated, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(evaluated["dir"], pickled, ignore=shutil.ignore_patterns("checkpoints", "data", "samples"))
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    assert main(["export", str(pickled), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no safetensors weights" in err and "pytorch_model.bin" in err and "pickle files" in err


def test_card_control_token_names_match_the_tokenizer():
    from phf import tokenizer

    assert (ALIGNED, MISALIGNED) == tokenizer.CONTROL_TOKENS
    assert attribute_tokens("toxicity") == tokenizer.attribute_tokens("toxicity")


def test_front_matter_names_a_hub_dataset_but_not_a_local_file(tmp_path):
    local = tmp_path / "corpus.jsonl"
    local.write_text("{}\n")
    summary = {"objective": "mle", "task": "toxicity"}
    assert front_matter({"data": {"source": "hf", "path": "someone/pile-scored"}}, summary)["datasets"] == \
        ["someone/pile-scored"]
    assert "datasets" not in front_matter({"data": {"source": "hf", "path": str(local)}}, summary)
    assert "datasets" not in front_matter({"data": {"source": "jsonl", "path": "corpus.jsonl"}}, summary)


def test_a_multi_attribute_card_names_each_attributes_tokens_and_threshold(tmp_path):
    config = {"task": {"name": "toxicity+pii", "scorer": "multi", "drop_token_fraction": 0.01,
                       "attributes": {"toxicity": {"threshold": 0.5}, "pii": {"threshold": 0.0}}},
              "data": {"source": "jsonl", "path": "corpus.jsonl"},
              "objective": {"name": "conditional", "drop_token_fraction": None, "attributes": None},
              "model": {"preset": "tiny"}, "tokenizer": {"vocab_size": 4096},
              "training": {"effective_batch_size": 16, "block_size": 256}, "eval": {"temperature": 0.7, "top_p": 0.9}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # as Config.save
    (tmp_path / "train_summary.json").write_text(json.dumps(
        {"objective": "conditional", "task": "toxicity+pii", "seed": 1, "threshold": 0.0, "tokens_seen": 4096,
         "steps": 1, "parameters": 1000, "started_from": "scratch (tiny)"}))
    meta, body = split_card(render_card(tmp_path))
    assert meta["tags"][:4] == ["phf", "pretraining-with-human-feedback", "conditional", "toxicity+pii"]
    assert "Aligned: `<|toxicity:aligned|>`, `<|pii:aligned|>`; misaligned: `<|toxicity:misaligned|>`" in body
    assert "Misaligned above: `toxicity` 0.5, `pii` 0." in body
    assert 'tokenizer.eos_token + "<|toxicity:aligned|><|pii:aligned|>"' in body  # the prefix to generate after


def test_a_card_that_cannot_be_written_warns_and_a_foreign_model_folder_gets_none(tmp_path, caplog):
    from phf.card import refresh_card

    assert refresh_card(tmp_path) is None and not (tmp_path / "README.md").exists()  # no train_summary.json
    (tmp_path / "train_summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("task: [unclosed\n")
    assert refresh_card(tmp_path) is None
    assert "model card not written" in caplog.text and "config.yaml: damaged, not valid YAML" in caplog.text
    assert main(["card", str(tmp_path)]) == 2  # phf card says why, in one line
