"""The real-world NAD corpus in ../shared/nad-corpus (INDEX.md there), read in place.

Lint's verdict on every file: each documented fault is named, and no config that
the reference plugins run fine gets an error. A property test feeds lint mutated
corpus files: it reports, it never fails.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.lib import lint
from tests.rig import ROOT

CORPUS = ROOT.parent / "shared" / "nad-corpus"
FILES = sorted(p for p in CORPUS.glob("[0-9][0-9]-*") if p.suffix in (".yaml", ".json"))
needs_corpus = pytest.mark.skipif(not FILES, reason=f"../shared absent: no corpus in {CORPUS}")

# What lint must say about each file: (level, fragment of the message). The reference
# runs every file not listed in BROKEN; those must get no error.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "01": [("warning", "default route 0.0.0.0/0")],
    "03": [("warning", "default route"), ("warning", "'gateway' is not a Multus key")],
    "04": [("error", "template placeholder")],
    "05": [("error", "template placeholder")],
    "06": [("warning", "no cniVersion")],
    "07": [("warning", "no cniVersion")],
    "08": [("warning", "192.168.0.0/16 (private (RFC 1918))")],
    "09": [("error", "gateway 3ffe:ffff:0::1 is outside"), ("error", "none of the interface's")],
    "10": [("error", "file is not JSON")],
    "11": [("error", "file is not JSON near '...'")],
    "12": [("error", "file is not JSON near '<1>'")],
    "13": [("warning", "ipvlan with dhcp")],
    "14": [("error", "file is not JSON")],
    "15": [("error", "file is not JSON")],
    "17": [("error", "Extra data")],
    "18": [("warning", "192.168.0.0/16 (private (RFC 1918))")],
    "20": [("warning", "no master")],
    "22": [("error", "not YAML")],
    "24": [("error", "Expecting ':' delimiter")],
    "25": [
        ("error", "a comment"),
        ("error", "rangeStart 192.168.50.2 is above rangeEnd 192.168.2.9"),
        ("error", "rangeEnd 192.168.2.9 is outside its subnet"),
    ],
    "26": [("warning", "'datadir' is read as 'dataDir'"), ("warning", "'ranges' appears twice")],
    "27": [("warning", "default route 0.0.0.0/0")],
    "29": [("error", "spec.config is not JSON near '<-- OPTIONAL'")],
    "30": [("error", "spec.config is not JSON")],
    "31": [("warning", "unknown or ignored key 'vlan'")],
    "34": [("error", '"ips" must be a list')],
    "35": [("error", "ipam has keys ('ranges') but no type")],
    "36": [("error", "invalid subnet '$10.10.8.0/24'"), ("warning", "broadcast address")],
    "37": [("error", "flat list of ranges")],
    "38": [("error", "not YAML")],
    "39": [("error", "must be chained after an interface plugin")],
    "40": [("error", "'route-overwrite' is an old name"), ("warning", "no cniVersion")],
}
BROKEN = {
    "04", "05", "09", "10", "11", "12", "14", "15", "17", "22", "24", "25",
    "29", "30", "34", "35", "36", "37", "38", "39", "40",
}  # fmt: skip


def corpus_ids() -> list[str]:
    return [p.name[:2] for p in FILES] or ["none"]


def corpus_file(number: str) -> Path:
    if not FILES:
        pytest.skip(f"../shared absent: no corpus in {CORPUS}")
    return next(p for p in FILES if p.name.startswith(number))


def test_the_corpus_is_complete() -> None:
    if not FILES:
        pytest.skip(f"../shared absent: no corpus in {CORPUS}")
    assert [p.name[:2] for p in FILES] == [f"{n:02d}" for n in range(1, 41)]


@pytest.mark.parametrize("number", corpus_ids())
def test_lint_verdict(number: str) -> None:
    found = lint.lint_file(corpus_file(number))
    said = [(f.level, f.message) for f in found]
    for level, fragment in EXPECTED.get(number, []):
        assert any(lvl == level and fragment in msg for lvl, msg in said), (fragment, said)
    if number not in BROKEN:
        assert not [msg for lvl, msg in said if lvl == "error"], said
    else:
        assert any(lvl == "error" for lvl, _ in said), said
    assert all(f.line >= 1 for f in found)


TOKENS = [
    '"', "{", "}", "[", "]", ",", ":", "#", "'", "\n", "\t", " ", "$", "\\",
    "null", "true", "0", "-1", "1e999", '""', "{}", "[]", "[[]]", '"x"',
    '"10.1.0.0/24"', '"10.1.0.255"', '"::/0"', '"0.0.0.0/0"', '"fe80::1"',
    '"ranges": [[{}]], ', '"ranges": [{"subnet": 5}], ', '"ipam": {"routes": 7}, ',
    '"rangeStart": "10.1.0.9", ', '"subnet": "300.1.1.1/33", ', '"type": "mh-route", ',
    '"plugins": {}, ', '"addresses": [{"address": 1}], ', '"routes": [{"dst": null}], ',
    "kind: Pod\n", "---\n", "spec:\n  config: '{}'\n", "  k8s.v1.cni.cncf.io/networks: '[5]'\n",
]  # fmt: skip


def mutate(text: str, seed: int, count: int) -> str:
    rnd = random.Random(seed)  # noqa: S311 - reproducible mutations, not secrets
    for _ in range(count):
        at = rnd.randrange(len(text) + 1)
        choice = rnd.randrange(4)
        if choice == 0:
            text = text[:at] + rnd.choice(TOKENS) + text[at:]
        elif choice == 1:
            text = text[:at] + text[at + rnd.randrange(1, 40) :]
        elif choice == 2:
            text = text[:at] + rnd.choice(TOKENS) + text[at + 1 :]
        else:
            end = text.find('"', at + 1)
            stop = text.find('"', end + 1) if end >= 0 else -1
            if stop > end >= 0:  # a string's value replaced
                text = text[: end + 1] + rnd.choice(TOKENS).strip('"') + text[stop:]
    return text


@needs_corpus
@settings(max_examples=int(os.environ.get("CORPUS_EXAMPLES", "300")), deadline=None)
@given(
    index=st.integers(min_value=0, max_value=39),
    seed=st.integers(min_value=0, max_value=2**32),
    count=st.integers(min_value=1, max_value=6),
)
def test_lint_never_fails_on_a_mutated_corpus_file(index: int, seed: int, count: int) -> None:
    source = FILES[index % len(FILES)]
    text = mutate(source.read_text(), seed, count)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mutant{source.suffix}"
        path.write_text(text)
        found = lint.lint_file(path)
    assert all(f.level in ("error", "warning") and f.line >= 1 for f in found)


ODD_VALUES = [
    None, 5, -1, 1.5, True, "x", "", [], {}, [[]], [None], [5], ["x"], {"x": 1},
    "10.1.0.0/33", "10.1.0.255", "::/0", "0.0.0.0/0", "fe80::1", [{"dst": 5}],
    [{"subnet": None}], [[{"subnet": "10.1.0.0/24", "rangeStart": "::1"}]],
    [{"address": "10.1.0.2/24", "gateway": "::1"}], {"type": "etcd", "endpoints": 5},
]  # fmt: skip


def parsed_configs() -> list[object]:
    """Every corpus config that parses, as Python data (NADs' spec.config included)."""
    import json

    import yaml

    out: list[object] = []
    for path in FILES:
        texts = [path.read_text()]
        if path.suffix == ".yaml":
            try:
                docs = list(yaml.safe_load_all(texts[0]))
            except yaml.YAMLError:
                continue
            specs = [d.get("spec") for d in docs if isinstance(d, dict)]
            texts = [s["config"] for s in specs if isinstance(s, dict) and "config" in s]
        for text in texts:
            try:
                out.append(json.loads(text))
            except (ValueError, TypeError):
                continue
    return out


CONFIGS = parsed_configs() if FILES else []


def paths_of(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += paths_of(child, (*prefix, i))
    return out


def replaced(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: replaced(v, rest, new) if k == head else v for k, v in value.items()}
    assert isinstance(value, list)
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


@needs_corpus
@settings(max_examples=int(os.environ.get("CORPUS_EXAMPLES", "300")), deadline=None)
@given(data=st.data())
def test_lint_never_fails_on_a_config_with_odd_values(data: st.DataObject) -> None:
    import json

    conf = data.draw(st.sampled_from(CONFIGS))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(paths_of(conf)))
        conf = replaced(conf, path, data.draw(st.sampled_from(ODD_VALUES)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.conflist"
        path.write_text(json.dumps(conf))
        found = lint.lint_file(path)
    assert all(f.level in ("error", "warning") and f.line >= 1 for f in found)
