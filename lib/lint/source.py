"""Where things are in a config's source text: line numbers and ``#`` comments."""

from __future__ import annotations

import json
from typing import Any


class Source:
    """The text of a JSON config and where it starts in the file, for line numbers."""

    def __init__(self, raw: str, first_line: int) -> None:
        self.raw = raw
        self.first_line = first_line

    def line_of(self, needle: str, start: int = 0) -> int:
        index = self.raw.find(needle, start)
        return self.first_line + (self.raw.count("\n", 0, index) if index >= 0 else 0)


def strip_comments(text: str) -> tuple[str, list[int]]:
    """Drop ``#`` comments outside JSON strings; return the text and their offsets."""
    out, found, in_string, escaped, i = [], [], False, False, 0
    while i < len(text):
        ch = text[i]
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
        elif ch == '"':
            in_string = True
        elif ch == "#":
            found.append(i)
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        out.append(ch)
        i += 1
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
