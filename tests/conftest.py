"""Shared test setup: offline, one torch thread, tiny real models and tokenizers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # tiny models: thread start-up costs more than it gains, and on a shared 2-core
    # machine two spinning threads can slow small matmuls by orders of magnitude
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def code_texts():
    """Real Python source: a few standard-library modules."""
    from phf.config import DataConfig
    from phf.data.sources import iter_documents

    return [d["text"] for d in iter_documents(DataConfig(source="stdlib", max_bytes=400_000))]


@pytest.fixture(scope="session")
def tiny_tokenizer(code_texts):
    """A real byte-level BPE, trained on real code (small vocabulary, trains in ~1 s)."""
    from phf.tokenizer import train_tokenizer

    return train_tokenizer(code_texts, vocab_size=512)


# --- time per test file, printed at the end of every run --------------------------------

_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _FILE_SECONDS:
        return
    terminalreporter.section("seconds per test file (setup + call + teardown)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
