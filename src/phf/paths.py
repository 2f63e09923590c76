"""Path policy: where phf's own configs are, and which names are local paths.

A name that can only be a local path (see `looks_local`) is an error when missing;
any other name may be a hub name, looked up only when the user asked for it.
"""

from __future__ import annotations

from pathlib import Path

from phf.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config_path(name: str) -> Path:
    """A config file by path, or by short name under phf's configs ("tasks/pep8")."""
    p = Path(name)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {name!r} (neither a path nor a name under {CONFIG_DIR})")


#: suffixes that make a path a local file, never a hub name
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".txt", ".arrow", ".yaml", ".safetensors")


def looks_local(name: str) -> bool:
    """Whether `name` can only mean a local path, so that a missing one is an error and
    never a hub look-up. A hub name is `name` or `owner/name`; a path with a file suffix,
    more than one slash, a leading `/`, `.` or `~`, or whose first part is an existing
    local directory (`runs/missing`) is local."""
    return (name.startswith(("/", ".", "~")) or name.endswith(LOCAL_SUFFIXES) or name.count("/") > 1
            or ("/" in name and Path(name.split("/")[0]).is_dir()))
