"""Bounded reading of the JSON files a model folder, a reference bank or a dataset brings (issue 20).

Such files are data from anyone: `read_json` refuses, with a ValueError naming the file, one larger
than `max_bytes` (checked from its size before it is read), one nested deeper than `max_depth` (checked
by a scan of its brackets before it is parsed, so that the parser's recursion is never reached: Python's
`json` raises RecursionError on some thousand levels) and text that is not valid UTF-8 JSON. The bounds
(`JSON_LIMITS`) are far above what SIAD writes: a model's config.json is about 3 KB deep 3, a
generation config under 1 KB, a bank's sidecar under 2 KB.

`short_repr` cuts a value's repr for an error message, so that a huge field never makes a huge message.
"""

from __future__ import annotations

import json
import re
import reprlib
from pathlib import Path
from typing import Any

# What a JSON file may be: at most MAX_JSON_BYTES bytes and MAX_JSON_DEPTH levels of nesting (a config
# is 3 deep, a transformers config with rope_scaling 3); dataset indexes (meta.json) get more bytes.
MAX_JSON_BYTES = 1 << 20  # 1 MiB
MAX_JSON_DEPTH = 32
MAX_INDEX_BYTES = 1 << 30  # 1 GiB: a meta.json lists every image of a dataset (VisA's: about 3 MB)
MAX_REPR_CHARS = 120  # of a value quoted in an error message

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than `max_depth` (strings are skipped; the
    scan stops at the first level too deep)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def parse_json(text: str, source: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text -> its value; ValueError naming `source` when it is invalid or nested too deeply."""
    if json_depth_exceeds(text, max_depth):
        raise ValueError(f"{source}: JSON nested deeper than {max_depth} levels is refused")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from error


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The value of a JSON file, within the bounds (module docstring); ValueError naming the file
    otherwise (a missing file is FileNotFoundError, as `open` raises it)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size} bytes; a file of this kind may have at most {max_bytes}")
    data = path.read_bytes()[:max_bytes + 1]  # the file may have grown since the stat
    if len(data) > max_bytes:
        raise ValueError(f"{path}: more than {max_bytes} bytes; a file of this kind may have at most {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from error
    return parse_json(text, str(path), max_depth=max_depth)


def short_repr(value: Any) -> str:
    """`repr(value)` for an error message, cut by the standard library's `reprlib` (strings to about
    MAX_REPR_CHARS characters, containers to a few items and levels), so that a huge field never makes a
    huge message."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = MAX_REPR_CHARS
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 6
    shortener.maxlevel = 3
    return shortener.repr(value)
