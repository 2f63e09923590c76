"""Prose scorers: toxicity (three backends) and PII, plus scorers given by dotted path.

The Hugging Face and Detoxify backends are tested on tiny randomly initialised models
built here, so these tests check the plumbing (labels, activations, batching, loading
from local files only), not whether a model recognises toxicity; that is checked on the
offline default backend, which ships real weights.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch

from phf.scorers import get_scorer
from phf.scorers.pii import PIIScorer, _merge
from phf.scorers.toxicity import ToxicityScorer

TOXIC = [
    "You are a stupid idiot and I hate you.",
    "Go to hell, you fucking moron!",
    "Shut up, you worthless piece of shit.",
]
CLEAN = [
    "The weather is lovely today.",
    "Thank you for your help with the project.",
    "The committee will meet again on Tuesday to review the budget.",
]
CORPUS = TOXIC + CLEAN + ["The cat sat on the mat.", "Please pass the salt, dear."]


# --- toxicity: offline default backend -------------------------------------------------

@pytest.fixture(scope="module")
def tox():
    return ToxicityScorer()


def test_offline_backend_separates_toxic_from_clean(tox):
    assert tox.backend == "profanity_check"
    toxic, clean = tox.score_texts(TOXIC), tox.score_texts(CLEAN)
    assert min(toxic) > 0.5, toxic
    assert max(clean) < 0.2, clean


def test_toxicity_scores_sentences_and_averages_them(tox):
    doc = "Thank you for your help with the project. Go to hell, you fucking moron!\n\n   "
    segments, scores = tox.score_document(doc)
    assert "".join(segments) == doc
    assert len(segments) == 2 and scores[0] < 0.2 < 0.5 < scores[1]
    assert tox.document_score(segments, scores) == pytest.approx(sum(scores) / 2)
    assert tox.document_score([], []) == 0.0


def test_blank_segments_score_zero_without_the_model(tox):
    assert tox.score_segments(["   ", "\n", ""]) == [0.0, 0.0, 0.0]


def test_batched_documents_match_one_by_one():
    docs = ["Hello there. You idiot!", "", "Fine. Thanks.\n", "Go to hell, moron. OK?"]
    small, large = ToxicityScorer(batch_size=1), ToxicityScorer(batch_size=64)
    batched = large.score_documents(docs)
    assert batched == [small.score_document(d) for d in docs]


def test_registry_builds_prose_scorers():
    assert isinstance(get_scorer("toxicity"), ToxicityScorer)
    assert isinstance(get_scorer("pii", addresses=False), PIIScorer)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown toxicity backend"):
        ToxicityScorer(backend="perspective")
    with pytest.raises(ValueError, match="model="):
        ToxicityScorer(backend="hf")


# --- toxicity: Hugging Face backend on a tiny local model -----------------------------

def _train_tokenizer(kind: str):
    """A small tokenizer trained here (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(CORPUS * 5, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", model_max_length=32)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=32)


@pytest.fixture(scope="module")
def tiny_hf_classifier(tmp_path_factory):
    """A random GPT-2 classifier (labels neutral/toxic) and tokenizer saved to a directory."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _train_tokenizer("gpt2")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        num_labels=2, id2label={0: "neutral", 1: "toxic"},
                        label2id={"neutral": 0, "toxic": 1})
    model = GPT2ForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("tiny-hf-clf")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def _reference_probs(model, tokenizer, texts, column, sigmoid=False):
    """Each text alone (no padding), through the model directly."""
    out = []
    for t in texts:
        ids = tokenizer(t, return_tensors="pt", truncation=True, max_length=32)
        with torch.no_grad():
            logits = model(**ids).logits[0]
        out.append(float(torch.sigmoid(logits[column]) if sigmoid else torch.softmax(logits, -1)[column]))
    return out


def test_hf_backend_picks_the_toxic_label_and_matches_the_model(tiny_hf_classifier):
    path, model, tokenizer = tiny_hf_classifier
    scorer = ToxicityScorer(backend="hf", model=str(path), batch_size=4)
    assert scorer._predict.label_index == 1 and not scorer._predict.sigmoid
    texts = CORPUS + ["word " * 100]  # the last one is truncated
    scores = scorer.score_texts(texts)
    assert len(scores) == len(texts)
    assert all(0.0 <= s <= 1.0 for s in scores)
    tokenizer.pad_token = tokenizer.eos_token
    assert scores == pytest.approx(_reference_probs(model, tokenizer, texts, 1), abs=1e-5)


def test_hf_backend_label_by_name_or_index_and_batch_invariance(tiny_hf_classifier):
    path, _, _ = tiny_hf_classifier
    toxic = ToxicityScorer(backend="hf", model=path, batch_size=1).score_texts(CORPUS)
    by_name = ToxicityScorer(backend="hf", model=path, toxic_label="NEUTRAL",
                             batch_size=3).score_texts(CORPUS)
    by_index = ToxicityScorer(backend="hf", model=path, toxic_label=0, batch_size=8).score_texts(CORPUS)
    assert by_name == pytest.approx(by_index, abs=1e-5)
    assert [a + b for a, b in zip(toxic, by_name)] == pytest.approx([1.0] * len(CORPUS), abs=1e-5)
    sig = ToxicityScorer(backend="hf", model=path, activation="sigmoid").score_texts(CORPUS)
    assert sig != pytest.approx(toxic, abs=1e-3)  # the activation option is honoured


def test_hf_backend_errors_name_the_problem(tiny_hf_classifier, tmp_path):
    path, _, _ = tiny_hf_classifier
    with pytest.raises(ValueError, match=r"not one of the model's labels \['neutral', 'toxic'\]"):
        ToxicityScorer(backend="hf", model=path, toxic_label="insult")
    with pytest.raises(ValueError, match="out of range"):
        ToxicityScorer(backend="hf", model=path, toxic_label=2)
    with pytest.raises(OSError, match="cannot load the sequence-classification model"):
        ToxicityScorer(backend="hf", model=str(tmp_path / "missing"))


# --- toxicity: Detoxify checkpoints ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_detoxify_checkpoint(tmp_path_factory):
    """A checkpoint in Detoxify's format around a random tiny BERT, plus its base files."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tokenizer = _train_tokenizer("bert")
    base = tmp_path_factory.mktemp("tiny-bert-base")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=3)
    config.save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = BertForSequenceClassification(config).eval()
    ckpt = base / "toxic_tiny.ckpt"
    torch.save({
        "config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                     "model_name": "BertForSequenceClassification",
                                     "tokenizer_name": "BertTokenizer", "num_classes": 3}},
                   "dataset": {"args": {"classes": ["obscene", "toxic", "insult"]}}},
        "state_dict": model.state_dict(),
    }, ckpt)
    return ckpt, base, model, tokenizer


def test_detoxify_checkpoint_scores_the_toxicity_class(tiny_detoxify_checkpoint):
    ckpt, base, model, tokenizer = tiny_detoxify_checkpoint
    scorer = ToxicityScorer(backend="detoxify", checkpoint=ckpt, model=base, batch_size=3)
    # "toxic" is renamed "toxicity", as Detoxify does; it is the second class here
    assert scorer._predict.label_index == 1 and scorer._predict.sigmoid
    scores = scorer.score_texts(CORPUS)
    assert scores == pytest.approx(_reference_probs(model, tokenizer, CORPUS, 1, sigmoid=True), abs=1e-5)
    insult = ToxicityScorer(backend="detoxify", checkpoint=ckpt, model=base, toxic_label="insult")
    assert insult.score_texts(CORPUS) == pytest.approx(
        _reference_probs(model, tokenizer, CORPUS, 2, sigmoid=True), abs=1e-5)


def test_detoxify_missing_files_give_clear_errors(tiny_detoxify_checkpoint, tmp_path):
    ckpt, base, _, _ = tiny_detoxify_checkpoint
    with pytest.raises(ValueError, match="needs checkpoint="):
        ToxicityScorer(backend="detoxify")
    with pytest.raises(FileNotFoundError, match="Detoxify checkpoint not found"):
        ToxicityScorer(backend="detoxify", checkpoint=tmp_path / "toxic_debiased.ckpt", model=base)
    with pytest.raises(OSError, match="config and tokenizer of its base model"):
        ToxicityScorer(backend="detoxify", checkpoint=ckpt, model=str(tmp_path / "no-base"))
    bad = tmp_path / "bad.ckpt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a Detoxify checkpoint"):
        ToxicityScorer(backend="detoxify", checkpoint=bad, model=base)


# --- PII ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pii():
    return PIIScorer(names=False)


@pytest.mark.parametrize("text, kind, found", [
    ("Contact me at john.smith@example.com for details.", "email", "john.smith@example.com"),
    ("See https://www.example.org/page?id=3 for more.", "url", "https://www.example.org/page?id=3"),
    ("Call me on +1 (415) 555-2671 tomorrow.", "phone", "+1 (415) 555-2671"),
    ("My card number is 4111111111111111 and it expires soon.", "credit_card", "4111111111111111"),
    ("Follow @johnsmith for news.", "twitter", "@johnsmith"),
    ("My skype is johnsmith42 if you want to talk.", "skype", "johnsmith42"),
    ("His SSN is 123-45-6789.", "social_security_number", "123-45-6789"),
    ("I was born on 12 March 1984 in Leeds.", "date_of_birth", "12 March 1984"),
    ("username: jsmith password: hunter2", "credential", "hunter2"),
    ("Write to 123 Main Street, Springfield, IL 62701 today.", "address", "123 Main Street"),
])
def test_each_pii_type_is_found(pii, text, kind, found):
    spans = pii.find_pii(text)
    assert [k for k, _, _ in spans] == [kind], spans
    _, beg, end = spans[0]
    assert found in text[beg:end]
    assert pii.score_texts([text]) == [pytest.approx(1 / len(text))]


@pytest.mark.parametrize("text", [
    "The cat sat on the mat and looked at the garden.",
    "We met at noon. Look at them. I was at home.",      # scrubadub's own pattern flags these
    "The meeting was on 12 March 1984 in Leeds.",         # a date, but not of birth
    "Pi is about 3.14159 and version 1.2.3 is out.",
    "He walked 12 miles down the road.",
])
def test_clean_text_has_no_pii(pii, text):
    assert pii.find_pii(text) == []
    assert pii.score_segments([text]) == [0.0]


def test_scrubadub_email_pattern_is_available(pii):
    loose = PIIScorer(names=False, addresses=False, email_at_word=True)
    assert loose.count_pii("Write to john at example.com today.") == 1
    assert pii.count_pii("Write to john at example.com today.") == 0


def test_pii_per_character_and_document_score(pii):
    doc = "Mail jane@example.org or call 415-555-2671. Nothing here. Thanks!"
    segments, scores = pii.score_document(doc)
    assert "".join(segments) == doc and len(segments) == 3
    assert scores[0] == pytest.approx(2 / len(segments[0]))
    assert scores[1:] == [0.0, 0.0]
    # default: the plain mean of the sentence scores, as the paper's scored Pile
    assert pii.document_score(segments, scores) == pytest.approx(scores[0] / 3)
    for name in ("length_weighted", "chars"):  # total items / total characters
        weighted = PIIScorer(names=False, document_average=name)
        assert weighted.document_score(segments, scores) == pytest.approx(2 / len(doc))


def test_overlapping_finds_count_once(pii):
    assert _merge([("url", 0, 10), ("email", 5, 20), ("phone", 20, 25), ("name", 30, 35)]) == [
        ("url+email+phone", 0, 25), ("name", 30, 35)]
    text = "Visit https://example.com/~john.smith@example.com now."
    assert pii.count_pii(text) == 1


def test_a_failing_detector_is_counted_not_fatal():
    scorer = PIIScorer(names=False, addresses=False)

    class Broken:
        name = "broken"

        def iter_filth(self, text):
            raise RecursionError("boom")
            yield  # pragma: no cover

    scorer.detectors["broken"] = Broken()
    scores = scorer.score_segments(["Mail jane@example.org now.", "Nothing.", "  "])
    assert scores[0] > 0 and scores[1] == 0.0 and scores[2] == 0.0
    assert scorer.failures["broken"] == 2  # the blank segment is not scanned
    assert "boom" in scorer.last_errors["broken"]


def test_odd_input_does_not_crash(pii):
    odd = ["\x00\x01\x02", "@" * 500, "http://" * 200, "1" * 5000, "é" * 100 + "@x.y", "\ud800"]
    assert len(pii.score_segments(odd)) == len(odd)


def test_names_need_a_spacy_pipeline(tmp_path):
    if importlib.util.find_spec("en_core_web_sm") is not None:
        pytest.skip("a spaCy English pipeline is installed here")
    scorer = PIIScorer(addresses=False)  # names="auto"
    assert "names" in scorer.missing and "en_core_web_sm" in scorer.missing["names"]
    with pytest.raises(OSError, match="no spaCy pipeline"):
        PIIScorer(names=True, spacy_model=str(tmp_path / "nothing"))


def test_names_from_a_local_spacy_pipeline(tmp_path):
    spacy = pytest.importorskip("spacy", reason="spaCy is optional (names in PII)")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Jane Doe"},
                        {"label": "GPE", "pattern": "Paris"}])
    nlp.to_disk(tmp_path / "pipe")
    scorer = PIIScorer(names=True, spacy_model=str(tmp_path / "pipe"), addresses=False)
    assert scorer.find_pii("Jane Doe lives in Paris.") == [("name", 0, 8)]
    assert scorer.find_pii("Mail Jane Doe at jane@example.org.") == [("name", 5, 13), ("email", 17, 33)]


# --- a user's own scorer by dotted path -----------------------------------------------

@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_scoring.py").write_text(textwrap.dedent('''
        from phf.scorers import Scorer

        class ShoutScorer(Scorer):
            """Fraction of upper-case letters, per sentence."""
            def __init__(self, weight=1.0):
                self.weight = weight
            def segment(self, text):
                from phf.scorers.segment import get_segmenter
                return get_segmenter("sentences")(text)
            def score_segments(self, segments):
                return [self.weight * sum(c.isupper() for c in s) / max(1, len(s)) for s in segments]

        def count_bangs(texts):
            return [t.count("!") for t in texts]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_scoring", None)


def test_user_scorer_class_by_dotted_path(user_module):
    scorer = get_scorer("my_scoring:ShoutScorer", weight=2.0)
    segments, scores = scorer.score_document("HELLO there. Quiet.")
    assert segments == ["HELLO there. ", "Quiet."]
    assert scores == [pytest.approx(2 * 5 / 13), pytest.approx(2 * 1 / 6)]
    assert type(get_scorer("my_scoring.ShoutScorer")).__name__ == "ShoutScorer"


def test_user_function_by_dotted_path(user_module):
    scorer = get_scorer("my_scoring:count_bangs", segmenter="sentences")
    assert scorer.score_document("Wow! Really!! No.") == (["Wow! ", "Really!! ", "No."], [1.0, 2.0, 0.0])
    assert scorer.score_texts(["a!b!"]) == [2.0]
    with pytest.raises(ValueError, match="cannot load scorer"):
        get_scorer("my_scoring:nothing_here")
