"""Connecting to Ray: a running cluster by address, or a local instance for one run."""

from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger(__name__)


def import_ray():
    """Ray, or an error that says how to install it (a ValueError, so that the command
    line prints it as a one-line error)."""
    try:
        import ray
    except ImportError:
        raise ValueError('the Ray engine needs Ray: pip install "phf[ray]"') from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Yield the `ray` module, connected.

    Inside an existing session (`ray.init` already called) that session is used and
    left running. Otherwise `address` connects to a running cluster ("auto", or
    "HOST:PORT" of its head), and no address starts a local instance for this run
    (`num_cpus` CPUs, no dashboard), stopped at the end.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": a new instance, never a cluster that happens to run on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    log.info("Ray cluster resources: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()
