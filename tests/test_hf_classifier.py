"""The hf-classifier scorer: any local sequence-classification model, P(label) per segment.

Tiny randomly initialised classifiers (a GPT-2 and a multi-label Llama, which pool the
last non-pad token, and a BERT, which pools the first) with real tokenizers trained
here, saved to tmp_path.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from tiny_runs import tiny_tokenizer

from phf.cli import main
from phf.errors import ConfigError
from phf.scorers import get_scorer

PROSE = ["The weather is calm today. We walked to the river and back.",
         "You are an idiot! Nobody likes your code.", "Thanks.",
         "A short note. Another short note that goes on for quite a while longer than the first one did.",
         "Lunch is at noon; bring the slides, the projector and the long extension cable.", "Yes. No. Maybe."]
LABELS = {0: "neutral", 1: "toxic", 2: "spam"}


def _texts(n: int = 40) -> list[str]:
    """Texts of many lengths (1 to ~60 tokens), so batches hold padded rows."""
    words = " ".join(PROSE).split()
    return [" ".join(words[i % 7: i % 7 + 1 + (i * 5) % 40]) for i in range(n)]


@pytest.fixture(scope="module")
def gpt2_classifier(tmp_path_factory):
    """A 3-class GPT-2 classifier with its own BPE, whose tokenizer has no pad token."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path_factory.mktemp("gpt2-clf")
    tok = tiny_tokenizer(PROSE * 5, vocab_size=300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2, num_labels=3,
                        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                        pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory):
    """A 2-class BERT with a WordPiece vocabulary trained here."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("bert-clf")
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(PROSE * 5, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label={0: "ok", 1: "Bad"}, label2id={"ok": 0, "Bad": 1}, pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_classifier(tmp_path_factory, gpt2_classifier):
    """A multi-label Llama classifier (sigmoid per class) with the GPT-2 one's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("llama-clf")
    tok = AutoTokenizer.from_pretrained(gpt2_classifier)
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128, num_labels=3, id2label=LABELS,
                         label2id={v: k for k, v in LABELS.items()}, problem_type="multi_label_classification",
                         pad_token_id=tok.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _direct(folder, texts: list[str], index: int, sigmoid: bool = False) -> list[float]:
    """softmax(logits)[index] (or sigmoid(logits[index])) of each text on its own (no
    padding), by plain transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            logits = model(**tok(text, return_tensors="pt")).logits[0]
            out.append(float(torch.sigmoid(logits[index]) if sigmoid else torch.softmax(logits, dim=-1)[index]))
    return out


@pytest.mark.parametrize("kind,label,index,sigmoid", [("gpt2", "toxic", 1, False), ("gpt2", 2, 2, False),
                                                      ("bert", "bad", 1, False), ("llama", "spam", 2, True)])
def test_scores_are_the_probabilities_of_the_models_logits(kind, label, index, sigmoid, request):
    """Softmax over the classes; a multi-label model's class sigmoid (activation auto)."""
    folder = request.getfixturevalue(f"{kind}_classifier")
    texts = _texts(12)
    scorer = get_scorer("hf-classifier", model=str(folder), label=label, batch_size=5, device="cpu")
    assert scorer.sigmoid == sigmoid
    scores = scorer.score_texts(texts)
    assert scores == pytest.approx(_direct(folder, texts, index, sigmoid), abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in scores) and len({round(s, 5) for s in scores}) > 3  # varied, real


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_batch_size_does_not_change_the_scores(kind, request):
    folder = request.getfixturevalue(f"{kind}_classifier")
    texts = _texts(40)
    one = get_scorer("hf-classifier", model=str(folder), label=1, batch_size=1, device="cpu").score_texts(texts)
    many = get_scorer("hf-classifier", model=str(folder), label=1, batch_size=32, device="cpu").score_texts(texts)
    assert many == pytest.approx(one, abs=1e-5)


def test_documents_are_scored_per_segment_in_batches_across_documents(gpt2_classifier):
    scorer = get_scorer("hf-classifier", model=str(gpt2_classifier), label="toxic", batch_size=4, device="cpu")
    docs = [PROSE[0], PROSE[3] + "\n\n", "   ", PROSE[5]]
    batched = scorer.score_documents(docs)
    assert batched == [scorer.score_document(d) for d in docs]
    for text, (segments, scores) in zip(docs, batched):
        assert "".join(segments) == text and len(segments) == len(scores)
    assert len(batched[0][0]) == 2  # two sentences
    assert batched[2][1] == [0.0]  # nothing visible: nothing to classify


def test_bad_arguments_are_refused_before_loading(gpt2_classifier, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    def refused(match, **args):
        with pytest.raises(ConfigError, match=match):
            get_scorer("hf-classifier", **{"model": str(gpt2_classifier), "label": "toxic", **args})

    refused(r"task.scorer_args.model: .*no-such: no such model folder", model=str(tmp_path / "no-such"))
    refused(r"label='toxicity' is not a label .*\{0: neutral, 1: toxic, 2: spam\}", label="toxicity")
    refused(r"label=3 is out of range", label=3)
    refused(r"label is required.*1: toxic", label=None)
    refused(r"batch_size must be", batch_size=0)
    refused(r"max_length=500 is more than the model's 128 positions", max_length=500)
    refused(r"activation must be one of", activation="relu")
    refused(r"segmenter: unknown segmenter", segmenter="words")
    refused(r"device='tpu:0'", device="tpu:0")
    lm = tmp_path / "lm"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(lm)
    refused(r"is GPT2LMHeadModel, not a sequence-classification model", model=str(lm))


def test_phf_score_end_to_end(gpt2_classifier, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in PROSE))
    settings = ["tasks/toxicity-demo", "data.source=jsonl", f"data.path={corpus}", "task.scorer=hf-classifier",
                f"task.scorer_args={{model: {gpt2_classifier}, label: toxic, batch_size: 8, device: cpu}}"]
    out = tmp_path / "scored.jsonl"
    assert main(["score", *settings, "--out", str(out), "--workers", "1"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(PROSE)
    scorer = get_scorer("hf-classifier", model=str(gpt2_classifier), label="toxic", device="cpu")
    for record, text in zip(records, PROSE):
        segments, scores = scorer.score_document(text)
        assert record["texts"] == segments and record["scores"] == pytest.approx(scores, abs=1e-6)
    # a bad label: one line naming the key and the model's labels, exit status 2, nothing written
    capsys.readouterr()
    bad = settings[:-1] + [f"task.scorer_args={{model: {gpt2_classifier}, label: toxicity}}"]
    assert main(["score", *bad, "--out", str(tmp_path / "bad.jsonl"), "--workers", "1", "--restart"]) == 2
    err = capsys.readouterr().err.strip()
    assert "task.scorer_args.label='toxicity'" in err and "1: toxic" in err and "Traceback" not in err


def test_on_ray_actors_equals_the_local_engine(gpt2_classifier, tmp_path):
    """Two actors, three shards; every shard's records equal the local engine's (~20 s)."""
    ray = pytest.importorskip("ray")
    from pathlib import Path

    from phf.data.config import DataConfig
    from phf.data.scoring import score_dataset
    from phf.engines.ray_scoring import score_corpus_ray, uses_model
    from phf.records import read_scored
    from phf.scorers.config import TaskConfig

    assert uses_model("hf-classifier", {})
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"part-{i}.jsonl").write_text(
            "".join(json.dumps({"text": f"{t} (part {i})"}) + "\n" for t in PROSE))
    args = {"model": str(gpt2_classifier), "label": "toxic", "batch_size": 4}
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        result = score_corpus_ray(DataConfig(source="jsonl", path=str(tmp_path / "in")), tmp_path / "ray",
                                  "hf-classifier", args, actors=2, gpus_per_actor=0)
    finally:
        ray.shutdown()
    assert result.shards == 3 and result.summary.documents == 3 * len(PROSE)
    task = TaskConfig(name="toxicity", scorer="hf-classifier", scorer_args={**args, "device": "cpu"})
    for i in range(3):
        local = tmp_path / f"local-{i}.jsonl"
        score_dataset(DataConfig(source="jsonl", path=str(tmp_path / "in" / f"part-{i}.jsonl")), task, local,
                      num_workers=1)
        ray_records = list(read_scored(tmp_path / "ray" / f"shard-{i:05d}.parquet"))
        local_records = list(read_scored(local))
        assert [r.texts for r in ray_records] == [r.texts for r in local_records]
        for a, b in zip(ray_records, local_records):
            assert a.scores == pytest.approx(b.scores, abs=1e-6)
