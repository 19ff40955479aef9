"""Where things are in a config's source text: line numbers and ``#`` comments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class Source:
    """The text of a JSON config and where it starts in the file, for line numbers."""

    def __init__(self, raw: str, first_line: int) -> None:
        self.raw = raw
        self.first_line = first_line

    def line_of(self, needle: str, start: int = 0) -> int:
        index = self.raw.find(needle, start)
        return self.first_line + (self.raw.count("\n", 0, index) if index >= 0 else 0)


def scan(text: str, start: int = 0) -> Iterator[tuple[int, str, bool]]:
    """Walk JSON text with ``#`` comments: (index, char, outside a string) for each
    character not in a comment; a comment yields once, its ``#`` alone."""
    in_string, escaped, i = False, False, start
    while i < len(text):
        ch = text[i]
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
            yield i, ch, False
        elif ch == "#":
            yield i, ch, True
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            in_string = ch == '"'
            yield i, ch, True
        i += 1


def strip_comments(text: str) -> tuple[str, list[int]]:
    """Drop ``#`` comments outside JSON strings; return the text and their offsets."""
    out: list[str] = []
    found: list[int] = []
    for i, ch, code in scan(text):
        if code and ch == "#":
            found.append(i)
        else:
            out.append(ch)
    return "".join(out), found


def load_json(text: str) -> tuple[Any, list[str]]:
    """Parse like Go's encoding/json does for duplicates (the last wins); name them."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=pairs), duplicates
