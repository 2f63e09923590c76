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
