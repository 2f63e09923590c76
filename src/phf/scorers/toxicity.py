"""Toxicity: the probability that a sentence is toxic, from one of three backends.

* ``"profanity_check"`` (the offline default, also ``"auto"``): the linear SVM of the
  ``alt-profanity-check`` package (bag of words, trained on offensive-language data). It
  ships its weights in the wheel, so it works with no network and scores tens of
  thousands of sentences a second on a CPU. It flags profanity and insults well and
  misses toxicity without swear words; it is a stand-in, not the paper's scorer.
* ``"detoxify"``: a Detoxify checkpoint (``.ckpt``) on disk, the paper's scorer. The
  checkpoint holds only the weights and the name of its base model (e.g. roberta-base);
  the base model's config and tokenizer come from ``model=`` (a local directory, or a
  hub name already in the Hugging Face cache). We read the checkpoint ourselves rather
  than through the ``detoxify`` package because its loader always asks the hub for the
  base model's config, even when given local files. Nothing is downloaded.
* ``"hf"``: any Hugging Face sequence-classification model (``model=`` a local path or
  a hub name), with the toxic class chosen by ``toxic_label`` (a label name or an index).

The paper scored each sentence of the Pile with Detoxify ("original" for the training
data, "unbiased" for samples at evaluation time) and gave a document the plain mean of
its sentence probabilities; `document_score` does the same (the Scorer default, "mean").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from phf.scorers.segment import get_segmenter
from phf.scorers.base import Scorer
from phf.scorers.hf_classifier import label_probabilities

BACKENDS = ("auto", "profanity_check", "detoxify", "hf")


class ToxicityScorer(Scorer):
    """Per-sentence toxicity probability in [0, 1] (higher is worse).

    Args:
        backend: "auto" (= "profanity_check"), "profanity_check", "detoxify" or "hf".
        checkpoint: detoxify: path of the ``.ckpt`` file.
        model: hf: model directory or hub name. detoxify: where the base model's config
            and tokenizer are (default: the base model named in the checkpoint, which
            must then be in the Hugging Face cache).
        toxic_label: hf/detoxify: the class whose probability is the score, by label
            name (case-insensitive) or index. Default: "toxicity" for Detoxify; for hf,
            the one label with "toxic" in its name, or index 1 of a 2-class model.
        activation: "auto", "sigmoid" or "softmax". "auto" uses sigmoid for Detoxify,
            for one-logit models and for models whose config says multi-label, and
            softmax otherwise.
        batch_size: sentences per forward pass.
        device: "cpu", "cuda", "cuda:1", ... or "auto" (CUDA when available).
        max_length: truncate longer inputs to this many tokens (default: the
            tokenizer's limit, at most 512).
        trust_checkpoint: detoxify: allow unpickling arbitrary objects from the
            checkpoint (only for files you trust); by default only tensors and plain
            containers are loaded.
    """

    name = "toxicity"

    def __init__(self, backend: str = "auto", checkpoint: str | os.PathLike | None = None,
                 model: str | os.PathLike | None = None, toxic_label: str | int | None = None,
                 activation: str = "auto", batch_size: int = 64, device: str = "cpu",
                 max_length: int | None = None, trust_checkpoint: bool = False,
                 segmenter: str = "sentences"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown toxicity backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if activation not in ("auto", "sigmoid", "softmax"):
            raise ValueError(f"activation must be auto, sigmoid or softmax, not {activation!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.backend = "profanity_check" if backend == "auto" else backend
        self.batch_size = batch_size
        self._segment = get_segmenter(segmenter)
        if self.backend == "profanity_check":
            self._predict = _profanity_check_predictor()
        else:
            self._predict = _TransformersPredictor(
                self.backend, checkpoint=checkpoint, model=model, toxic_label=toxic_label,
                activation=activation, device=device, max_length=max_length,
                trust_checkpoint=trust_checkpoint)

    def segment(self, text: str) -> list[str]:
        return self._segment(text)

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """Scores in batches; a segment with no visible character scores 0 without a model call."""
        scores = [0.0] * len(segments)
        todo = [i for i, s in enumerate(segments) if s.strip()]
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start:start + self.batch_size]
            for i, p in zip(idx, self._predict([segments[i] for i in idx])):
                scores[i] = min(1.0, max(0.0, float(p)))
        return scores

    def score_documents(self, texts: Sequence[str]) -> list[tuple[list[str], list[float]]]:
        """Segments every document first, so that batches span documents."""
        docs = [self.segment(t) for t in texts]
        flat = self.score_segments([s for d in docs for s in d])
        out, pos = [], 0
        for d in docs:
            out.append((d, flat[pos:pos + len(d)]))
            pos += len(d)
        return out


# --- backends -------------------------------------------------------------------------

def _profanity_check_predictor():
    try:
        from profanity_check import predict_prob
    except ImportError as e:
        raise ImportError(
            "the offline toxicity scorer needs the alt-profanity-check package: "
            "pip install alt-profanity-check") from e
    return lambda texts: predict_prob(list(texts)).tolist()


class _TransformersPredictor:
    """A sequence classifier (HF model or Detoxify checkpoint) -> P(toxic) per text."""

    def __init__(self, backend, *, checkpoint, model, toxic_label, activation, device,
                 max_length, trust_checkpoint):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if backend == "detoxify":
            self.model, self.tokenizer, labels = _load_detoxify(checkpoint, model, trust_checkpoint)
            toxic_label = "toxicity" if toxic_label is None else toxic_label
            multi_label = True
        else:
            if model is None:
                raise ValueError("the 'hf' toxicity backend needs model= (a local directory or a hub name)")
            self.model, self.tokenizer = _load_hf(model)
            labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
            multi_label = self.model.config.problem_type == "multi_label_classification"
        self.label_index = _label_index(labels, toxic_label)
        self.sigmoid = (activation == "sigmoid" or
                        (activation == "auto" and (multi_label or len(labels) == 1)))
        if self.tokenizer.pad_token is None:  # GPT-2 style tokenizers have none
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        limit = self.tokenizer.model_max_length
        self.max_length = max_length or (limit if limit and limit <= 100_000 else 512)
        self.model.to(self.device).eval()

    def __call__(self, texts: list[str]) -> list[float]:
        return label_probabilities(self.model, self.tokenizer, texts, self.label_index, self.sigmoid,
                                   self.max_length, self.device)


def _label_index(labels: list[str], toxic_label: str | int | None) -> int:
    """Resolve the toxic class by name or index, with a message listing the labels."""
    if isinstance(toxic_label, int):
        if not 0 <= toxic_label < len(labels):
            raise ValueError(f"toxic_label={toxic_label} is out of range for labels {labels}")
        return toxic_label
    if toxic_label is not None:
        lowered = [str(label).lower() for label in labels]
        if str(toxic_label).lower() in lowered:
            return lowered.index(str(toxic_label).lower())
        raise ValueError(f"toxic_label={toxic_label!r} is not one of the model's labels {labels}")
    toxic = [i for i, label in enumerate(labels) if "toxic" in str(label).lower()
             and "non" not in str(label).lower()]
    if len(toxic) == 1:
        return toxic[0]
    if len(labels) <= 2:
        return len(labels) - 1
    raise ValueError(f"cannot tell which of the labels {labels} is the toxic one; pass toxic_label=")


def _load_hf(model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        net = AutoModelForSequenceClassification.from_pretrained(str(model))
    except OSError as e:
        raise OSError(
            f"cannot load the sequence-classification model {str(model)!r}: {e}\n"
            "Give a local directory (save_pretrained), or a hub name that is already in "
            "the Hugging Face cache; nothing is downloaded when HF_HUB_OFFLINE=1.") from e
    return net, tokenizer


def _load_detoxify(checkpoint, base, trust_checkpoint):
    """Build the classifier a Detoxify checkpoint describes, from local files only.

    A checkpoint is {"config": {"arch": {"args": {"model_type": "roberta-base",
    "model_name": "RobertaForSequenceClassification", "num_classes": 16, ...}},
    "dataset": {"args": {"classes": [...]}}}, "state_dict": {...}}.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if checkpoint is None:
        raise ValueError(
            "the 'detoxify' toxicity backend needs checkpoint= (the path of a Detoxify .ckpt "
            "file, e.g. toxic_debiased-c7548aa0.ckpt for 'unbiased'); it never downloads one")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Detoxify checkpoint not found: {path}. Download it once on a machine with network "
            "access (the Detoxify project's release files, e.g. toxic_debiased-c7548aa0.ckpt) "
            "and pass its path as checkpoint=")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as e:
        hint = "" if trust_checkpoint else (
            " If the file is a checkpoint you trust that holds other Python objects, "
            "pass trust_checkpoint=True.")
        raise ValueError(f"cannot read Detoxify checkpoint {path}: {e}.{hint}") from e
    try:
        arch = loaded["config"]["arch"]["args"]
        classes = list(loaded["config"]["dataset"]["args"]["classes"])
        state_dict = loaded["state_dict"]
    except (KeyError, TypeError):
        raise ValueError(
            f"{path} is not a Detoxify checkpoint: expected keys config.arch.args, "
            "config.dataset.args.classes and state_dict") from None
    # Detoxify's own renaming, so that "toxicity" names the same class in every model
    renames = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
    classes = [renames.get(c, c) for c in classes]
    base = str(base or arch.get("model_type") or "")
    try:
        config = AutoConfig.from_pretrained(base, num_labels=arch.get("num_classes", len(classes)))
        tokenizer = AutoTokenizer.from_pretrained(base)
    except OSError as e:
        raise OSError(
            f"the Detoxify checkpoint needs the config and tokenizer of its base model {base!r}, "
            f"which could not be loaded offline: {e}\nPass model= a local directory holding them "
            f"(AutoTokenizer/AutoConfig.from_pretrained({base!r}).save_pretrained(DIR) once "
            "with network access).") from e
    model_cls = getattr(transformers, str(arch.get("model_name", "")), None)
    net = model_cls(config) if model_cls else AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    # older transformers saved the position-id buffers that newer ones rebuild
    missing = [k for k in missing if not k.endswith("_ids")]
    unexpected = [k for k in unexpected if not k.endswith("_ids")]
    if missing or unexpected:
        raise ValueError(
            f"Detoxify checkpoint {path} does not fit {type(net).__name__} built from {base!r}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net, tokenizer, classes


__all__ = ["ToxicityScorer", "BACKENDS"]
