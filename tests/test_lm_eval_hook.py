import json
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from phf.evaluation.lm_eval_hook import _flatten, lm_eval_available, run_lm_eval
from phf.tokenizer import train_tokenizer

DOCS = [
    {"question": "def add(a, b):\n    return", "choices": [" a + b", " a - b"]},
    {"question": "import", "choices": [" os", " sys", " re"]},
    {"question": "for i in", "choices": [" range(10):", " x:"]},
    {"question": "print(", "choices": ["1)", "'a')"]},
    {"question": "class", "choices": [" A:", " Point:"]},
    {"question": "x =", "choices": [" 1", " 2", " None"]},
]

TASK_YAML = """\
task: phf_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_flatten_drops_filter_suffix_and_non_numbers():
    raw = {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A",
           "exact_match,strict-match": 1.0, "acc_norm,none": 0.25}
    assert _flatten(raw) == {"acc": 0.5, "exact_match,strict-match": 1.0, "acc_norm": 0.25}


def test_clear_error_when_lm_eval_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    assert not lm_eval_available()
    with pytest.raises(ImportError, match="pip install"):
        run_lm_eval("unused", ["x"])


def _predictions(model, tok):
    """lm-eval's multiple-choice rule, computed directly: per question, the choice
    with the highest log p(choice | question) (no start token, as lm-eval's HF model)."""
    preds = []
    for doc in DOCS:
        ctx = tok(doc["question"]).input_ids
        lls = []
        for choice in doc["choices"]:
            whole = tok(doc["question"] + choice).input_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            lls.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        preds.append(max(range(len(lls)), key=lls.__getitem__))
    return preds


@pytest.mark.skipif(not lm_eval_available(), reason="lm-eval not installed (optional extra phf[lm-eval])")
def test_custom_local_task_matches_direct_computation(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a busy 2-core machine
    try:
        tok = train_tokenizer([d["question"] + c for d in DOCS for c in d["choices"]] * 10, vocab_size=280)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_head=2,
                                           n_embd=16, bos_token_id=tok.eos_token_id,
                                           eos_token_id=tok.eos_token_id))
        model.save_pretrained(tmp_path / "model")
        tok.save_pretrained(tmp_path / "model")
        data = tmp_path / "docs.jsonl"
        # label half of the questions with the model's own choice and half with
        # another one, so the right answer is acc = 0.5 exactly
        preds = _predictions(model.eval(), tok)
        docs = [dict(d, label=p if i % 2 == 0 else (p + 1) % len(d["choices"]))
                for i, (d, p) in enumerate(zip(DOCS, preds))]
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        tasks = tmp_path / "tasks"
        tasks.mkdir()
        (tasks / "tiny.yaml").write_text(TASK_YAML.format(data=data))

        results = run_lm_eval(tmp_path / "model", ["phf_tiny_mc"], include_path=tasks,
                              include_defaults=False, batch_size=4, device="cpu")
        assert set(results) == {"phf_tiny_mc"}
        assert results["phf_tiny_mc"]["acc"] == pytest.approx(0.5)
    finally:
        torch.set_num_threads(before)
