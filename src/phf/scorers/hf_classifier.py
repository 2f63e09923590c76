"""Any local sequence-classification model as a scorer: `scorer: hf-classifier`.

    task:
      scorer: hf-classifier
      scorer_args: {model: path/to/classifier, label: toxic, batch_size: 32, max_length: 256, device: auto}

`model` is a folder written by `save_pretrained` (config.json, safetensors weights and
the tokenizer): a reward model, a quality or toxicity classifier, a topic detector. A
segment's score is the probability the classifier gives `label` (a name from the
model's `config.id2label`, or an index).

Why that is a misalignment score: phf wants scores >= 0 with higher worse and 0
perfect (reward = -score). A probability lies in [0, 1], and naming the class one wants
*less* of ("toxic", "negative", "low_quality") makes a higher score mean more of the
unwanted behaviour; 0 means the classifier is sure the text is not of that class. (To
score by a wanted class, name its complement: with two classes, P(bad) = 1 - P(good).)
The probability is the softmax over the classes, or the label's sigmoid for a
multi-label or one-logit model (`activation`), so thresholds keep the meaning of a
probability whichever classifier is used.

Everything the scorer needs is checked before a weight is loaded, as one line naming
the `task.scorer_args` key: a missing folder, a model that is not a sequence classifier,
a label the model does not have (the message lists its labels), a device that does not
exist. Segments are scored in batches of `batch_size` sorted by length (less padding
per batch; the scores do not depend on the batching), on the GPU when there is one
(`device: auto`). On the Ray engine it runs on the actor pool, one model per actor, on
`--gpus-per-actor` GPUs each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Sequence

from phf.errors import ConfigError
from phf.scorers.base import Scorer
from phf.scorers.segment import get_segmenter

ACTIVATIONS = ("auto", "softmax", "sigmoid")
#: the longest input when neither max_length nor the model says otherwise
DEFAULT_MAX_LENGTH = 512
ARGS = "task.scorer_args"


class HFClassifierScorer(Scorer):
    """P(`label`) per segment, from a local `*ForSequenceClassification` model.

    Args:
        model: the model folder (save_pretrained: config.json, weights, tokenizer).
        label: the class whose probability is the score: a name in the model's
            config.id2label (exact, else case-insensitive) or an index.
        batch_size: segments per forward pass.
        max_length: longer segments are truncated to this many tokens (default: the
            model's position limit or the tokenizer's, at most 512).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        activation: "auto" (softmax; sigmoid for multi-label or one-logit models),
            "softmax" or "sigmoid".
        segmenter: how documents are split: "sentences" (prose) or "lines" (code).
    """

    name = "hf-classifier"
    #: documents per chunk from the corpus loop: batches span documents, so give it many
    chunk_size = 64

    def __init__(self, model: str | os.PathLike | None = None, label: str | int | None = None,
                 batch_size: int = 32, max_length: int | None = None, device: str = "auto",
                 activation: str = "auto", segmenter: str = "sentences"):
        folder, config = _classifier_config(model)
        labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
        self.label = labels[_label_index(labels, label, folder)]
        self.label_index = labels.index(self.label)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{ARGS}.batch_size must be a whole number >= 1, not {batch_size!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"{ARGS}.activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        self.sigmoid = activation == "sigmoid" or (activation == "auto" and multi_label)
        try:
            self._segment = get_segmenter(segmenter)
        except ValueError as e:
            raise ConfigError(f"{ARGS}.segmenter: {e}") from None
        self.device = _device(device)
        self.batch_size = batch_size
        self.model, self.tokenizer = _load(folder, config)
        self.max_length = _max_length(max_length, config, self.tokenizer)
        self.model.to(self.device).eval()

    def segment(self, text: str) -> list[str]:
        return self._segment(text)

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """Scores in batches of similar length; a segment with no visible character
        scores 0 without a model call (there is nothing in it to classify)."""
        scores = [0.0] * len(segments)
        todo = sorted((i for i, s in enumerate(segments) if s.strip()), key=lambda i: len(segments[i]))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            for i, p in zip(batch, self.probabilities([segments[i] for i in batch])):
                scores[i] = p
        return scores

    def score_documents(self, texts: Sequence[str]) -> list[tuple[list[str], list[float]]]:
        """Every document's segments in one batched pass."""
        docs = [self.segment(t) for t in texts]
        flat = iter(self.score_segments([s for d in docs for s in d]))
        return [(d, [next(flat) for _ in d]) for d in docs]

    def probabilities(self, texts: list[str]) -> list[float]:
        """P(label) for each text, in one forward pass."""
        return label_probabilities(self.model, self.tokenizer, texts, self.label_index, self.sigmoid,
                                   self.max_length, self.device)


def label_probabilities(model, tokenizer, texts: list[str], label_index: int, sigmoid: bool, max_length: int,
                        device) -> list[float]:
    """P(class `label_index`) for each text, in one padded forward pass of a sequence
    classifier: the softmax over its classes, or that class's sigmoid (multi-label)."""
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length).to(device)
    with torch.inference_mode():
        logits = model(**enc).logits.float()
    probs = torch.sigmoid(logits[:, label_index]) if sigmoid else torch.softmax(logits, dim=-1)[:, label_index]
    return probs.clamp(0.0, 1.0).cpu().tolist()


# --- checks, before any weight is loaded ----------------------------------------------

def _classifier_config(model):
    """The folder and its config, or a ConfigError saying what is wrong with it."""
    from transformers import AutoConfig

    if model is None or str(model) == "":
        raise ConfigError(f"{ARGS}.model is required: the folder of a sequence-classification model "
                          "(save_pretrained)")
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{ARGS}.model: {folder}: no such model folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{ARGS}.model: {folder} has no config.json: not a saved transformers model")
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        config = AutoConfig.from_pretrained(str(folder))
    except (ValueError, OSError, AttributeError) as e:
        raise ConfigError(f"{ARGS}.model: {config_file}: cannot read it: {e}") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        what = ", ".join(map(str, architectures)) or "no architecture"
        raise ConfigError(f"{ARGS}.model: {folder} is {what}, not a sequence-classification model "
                          "(config.json architectures has no *ForSequenceClassification)")
    return folder, config


def _label_index(labels: list[str], label, folder: Path) -> int:
    """`label` (a name or an index) as an index into `labels`."""
    listed = ", ".join(f"{i}: {name}" for i, name in enumerate(labels))
    if label is None:
        raise ConfigError(f"{ARGS}.label is required: the class whose probability is the misalignment "
                          f"score; {folder} has labels {{{listed}}}")
    if isinstance(label, int) and not isinstance(label, bool):
        if not 0 <= label < len(labels):
            raise ConfigError(f"{ARGS}.label={label} is out of range: {folder} has labels {{{listed}}}")
        return label
    if isinstance(label, str):
        if label in labels:
            return labels.index(label)
        folded = [i for i, name in enumerate(labels) if name.lower() == label.lower()]
        if len(folded) == 1:
            return folded[0]
    raise ConfigError(f"{ARGS}.label={label!r} is not a label of {folder}: its config.id2label is {{{listed}}}")


def _device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"{ARGS}.device={device!r}: {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{ARGS}.device={device!r}, but this machine has no CUDA GPU (device: auto picks one "
                          "when there is one)")
    return resolved


def _max_length(requested, config, tokenizer) -> int:
    """The longest input: `requested`, or the model's limit, never past its positions."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length <= 100_000 else None
    if requested is None:
        return min(x for x in (positions, tokenizer_limit, DEFAULT_MAX_LENGTH) if x)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ConfigError(f"{ARGS}.max_length must be a whole number >= 1, not {requested!r}")
    if positions and requested > positions:
        raise ConfigError(f"{ARGS}.max_length={requested} is more than the model's {positions} positions")
    return requested


def _load(folder: Path, config):
    """The model (safetensors weights only) and its tokenizer, padding as the model expects."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not any(folder.glob("*.safetensors")):
        raise ConfigError(f"{ARGS}.model: {folder} has no safetensors weights (phf does not unpickle "
                          "pytorch_model.bin: that can run code); save the model with save_pretrained")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{ARGS}.model: {folder}: cannot load its tokenizer: {e}") from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), config=config, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{ARGS}.model: {folder}: cannot load it as a sequence classifier: {e}") from None
    # Decoder classifiers (GPT-2, Llama) read the last token that is not config.pad_token_id,
    # so the tokenizer must pad with exactly that id, or a padded row reads a pad token
    # and its score changes with the batch it is in.
    if model.config.pad_token_id is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(model.config.pad_token_id))
    else:
        if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise ConfigError(f"{ARGS}.model: {folder}: neither the model nor its tokenizer has a padding token, "
                              "so texts cannot be batched; set pad_token_id in config.json")
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


__all__ = ["HFClassifierScorer", "label_probabilities"]
