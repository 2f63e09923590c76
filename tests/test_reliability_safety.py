"""Safe by default: safetensors only (pickles refused unless asked for), no remote code
unless asked for, and nothing fetched from the network unless a hub resource is named:
the tiny end-to-end path runs with networking unavailable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tiny_runs import tiny

from phf.config import ModelConfig, TokenizerConfig
from phf.model import load_model


def _tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
                                      bos_token_id=0, eos_token_id=0))


class _RunsCode:
    """Unpickling this runs a command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def pickled_model(tmp_path):
    d = tmp_path / "pickled"
    model = _tiny_gpt2()
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    return d


def test_pickled_weights_are_refused_unless_the_user_allows_them(pickled_model):
    assert ModelConfig().allow_pickle is False
    with pytest.raises(ValueError, match=r"only pickled weights \(pytorch_model.bin\).*model.allow_pickle=true"):
        load_model(str(pickled_model))
    model = load_model(str(pickled_model), allow_pickle=True)
    assert model.config.n_layer == 1


def test_a_malicious_pickle_never_runs(tmp_path, pickled_model):
    marker = tmp_path / "pwned"
    torch.save({"w": _RunsCode(marker)}, pickled_model / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickled weights"):
        load_model(str(pickled_model))
    # even when allowed, transformers unpickles with weights_only=True: no code runs
    with pytest.raises(Exception):
        load_model(str(pickled_model), allow_pickle=True)
    assert not marker.exists()


def test_safetensors_checkpoint_loads(tmp_path):
    _tiny_gpt2().save_pretrained(tmp_path / "safe")
    assert load_model(str(tmp_path / "safe")).config.n_embd == 16


def test_remote_code_is_off_unless_asked_for(tmp_path):
    assert ModelConfig().trust_remote_code is False
    d = tmp_path / "custom"
    _tiny_gpt2().save_pretrained(d)
    marker = tmp_path / "ran"
    (d / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config\nclass EvilConfig(GPT2Config):\n    model_type = 'evil'\n")
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (d / "config.json").write_text(json.dumps(config))
    load_model(str(d))  # transformers' own GPT-2 class: the shipped code is ignored
    assert not marker.exists()


def test_missing_local_model_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(str(tmp_path / "no-such-run"))
    assert TokenizerConfig().path is None  # default: train a tokenizer, download nothing


# --- the tiny end-to-end path without a network --------------------------------------

AUDIT = r"""
import json, socket, sys
attempts = []

def hook(event, args):
    # every attempt to resolve a name or open a non-local socket is recorded and refused
    if event == "socket.getaddrinfo":
        attempts.append([event, str(args[0])])
        raise OSError("network disabled by test")
    if event == "socket.connect" and args[0].family != socket.AF_UNIX:
        attempts.append([event, repr(args[1])])
        raise OSError("network disabled by test")

sys.addaudithook(hook)
from phf.cli import main
code = 0
try:
    for argv in json.loads(sys.argv[1]):
        code = main(argv)
        if code:
            break
finally:
    with open(sys.argv[2], "w") as f:
        json.dump(attempts, f)
sys.exit(code)
"""

TINY = tiny({"training.num_tokens": 2048, "training.logging_steps": 1, "training.report_to": "[tensorboard]",
             "eval.num_samples": 4, "eval.max_new_tokens": 8, "eval.group_size": 2, "eval.heldout_max_tokens": 500,
             "eval.every_steps": 0, "data.heldout_fraction": 0.1})


def _no_network_prefix() -> list[str]:
    """`unshare -n` (a network namespace with only loopback) where we may create one."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def test_tiny_end_to_end_runs_with_networking_unavailable(tmp_path):
    scored, run = tmp_path / "scored.jsonl", tmp_path / "run"
    common = [f"data.scored_path={scored}", f"training.output_dir={run}", *TINY]
    commands = [["score", "tasks/pep8", "data.max_bytes=60000", *common, "-j", "1"],
                ["train", "tasks/pep8", "objectives/conditional", "models/tiny", *common],
                ["eval", str(run)]]
    env = {k: v for k, v in os.environ.items() if "OFFLINE" not in k and "PROXY" not in k.upper()}
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env.update({"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"), "NO_PROXY": "", "no_proxy": "",
                **{k: closed for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")}})
    attempts = tmp_path / "attempts.json"
    prefix = _no_network_prefix()
    proc = subprocess.run([*prefix, sys.executable, "-c", AUDIT, json.dumps(commands), str(attempts)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert json.loads(attempts.read_text()) == [], "phf tried to reach the network"
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    assert results["heldout_loss"] > 0
    assert not (tmp_path / "hf-home" / "hub").exists() or not any((tmp_path / "hf-home" / "hub").iterdir())
