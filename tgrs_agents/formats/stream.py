"""Reading a source file record by record without loading it whole.

* :func:`iter_lines`: JSONL, one ``(line number, bytes)`` per non-blank line.

Every reader drops a UTF-8 byte order mark at the top of a file (here for lines and arrays; the
standard library's ``json.load`` of bytes does it for whole documents and zip members).
* :class:`ArrayStream`: the elements of a JSON array, one at a time: the top-level array of a file
  (ShareGPT, tau-bench, Dolci exports), or the array under one key of a top-level object (Inspect's
  ``samples``), with the object's other keys seen before it kept in :attr:`ArrayStream.head`.
* :func:`container`: what a file holds (``zip``, ``array``, ``jsonl`` or ``document``), read from its
  first bytes, so a reader and the sniffer know how to walk it.

The scanner is a small loop over :meth:`json.JSONDecoder.raw_decode` on a sliding text window: the
buffer holds the element being decoded plus one read, so memory is flat in the file's size (a test
measures it on a generated array). An element is only taken once the character after it is in the
window (and, after a number, a delimiter: ``-2`` may be the start of ``-2.5``). The standard library does
this; ``ijson`` would too, but is not worth a dependency for it.
"""

from __future__ import annotations

import codecs
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ..errors import InputError

Container = Literal["zip", "array", "jsonl", "document"]

_READ = 1 << 16
_WS = " \t\r\n"
_DELIMITERS = ",]}:" + _WS


BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` for each non-blank line (numbers count blank lines too).

    A UTF-8 byte order mark is dropped: Windows tools write one at the top of a file (and ``cat``
    of such files leaves one at the start of a later line), and JSON parsers refuse it.
    """
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.startswith(BOM):
                raw = raw[3:]
            if raw.strip():
                yield n, raw


class ArrayStream:
    """The elements of a JSON array in ``path``, decoded one at a time.

    ``key=None``: the file is an array. ``key="samples"``: the file is an object and the array is
    its member ``samples``; members before it land in :attr:`head` (decoded whole: keep them small),
    members after it are not read. A file that ends early raises :class:`InputError` with the
    element index.
    """

    def __init__(self, path: Path, key: str | None = None, *, read_size: int = _READ) -> None:
        self.path = Path(path)
        self.key = key
        self.head: dict[str, Any] = {}
        self._read_size = read_size
        self._dec = json.JSONDecoder()

    def __iter__(self) -> Iterator[Any]:
        with self.path.open("rb") as f:
            self._f: BinaryIO = f
            self._utf8 = codecs.getincrementaldecoder("utf-8-sig")("replace")  # drops a leading BOM
            self._buf, self._pos, self._eof = "", 0, False
            if self.key is None:
                self._expect("[")
            elif not self._seek_member():
                return
            yield from self._elements()

    # --- the window ---------------------------------------------------------------------------
    def _more(self, size: int = 0) -> bool:
        if self._eof:
            return False
        data = self._f.read(max(size, self._read_size))
        self._eof = not data
        self._buf = self._buf[self._pos:] + self._utf8.decode(data, final=self._eof)
        self._pos = 0
        return bool(data)

    def _peek(self) -> str:
        """The next non-space character ('' at the end), skipping spaces."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WS:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return ""

    def _expect(self, ch: str) -> None:
        got = self._peek()
        if got != ch:
            raise InputError(f"expected '{ch}' in a JSON {'array' if ch in '[,]' else 'object'}; "
                             f"got {got or 'end of file'!r}", file=self.path)
        self._pos += 1

    def _value(self) -> Any:
        """Decode the value at the cursor; reads on until the character after it is in the window."""
        self._peek()
        while True:
            try:
                value, end = self._dec.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as e:
                # cut off by the window's end (read on, twice as far each time), or really broken
                cut = e.pos >= len(self._buf) - 8 or e.msg.startswith("Unterminated")
                if cut and self._more(len(self._buf) - self._pos):
                    continue
                raise InputError(f"not valid JSON ({e.msg})", file=self.path) from None
            # a number is only whole once a delimiter follows it ("-2" may be the start of "-2.5")
            number = isinstance(value, int | float) and not isinstance(value, bool)
            cut = end >= len(self._buf) or (number and self._buf[end] not in _DELIMITERS)
            if cut and self._more(len(self._buf) - self._pos):
                continue
            self._pos = end
            return value

    # --- walking ------------------------------------------------------------------------------
    def _seek_member(self) -> bool:
        self._expect("{")
        if self._peek() == "}":
            return False
        while True:
            name = self._value()
            self._expect(":")
            if name == self.key:
                self._expect("[")
                return True
            self.head[str(name)] = self._value()
            if self._peek() == "}":
                return False
            self._expect(",")

    def _elements(self) -> Iterator[Any]:
        if self._peek() == "]":
            return
        while True:
            yield self._value()
            if self._peek() == "]":
                return
            self._expect(",")


def container(path: Path) -> Container:
    """What ``path`` holds, from its first bytes: a zip, a JSON array, JSONL, or one JSON document."""
    with Path(path).open("rb") as f:
        head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
            return "zip"
        f.seek(0)
        first = b""
        while (ch := f.read(1)) and ch in b" \t\r\n\xef\xbb\xbf":
            pass
        first = ch
        if first == b"[":
            return "array"
        if first != b"{":
            return "jsonl"  # not JSON at all: the line reader says so, line by line
        f.seek(0)
        for raw in f:
            if raw.strip():
                try:
                    json.loads(raw)
                except ValueError:
                    return "document"  # an object spread over several lines
                return "jsonl"
    return "jsonl"


def zip_members(path: Path, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(name, decoded JSON)`` for each member under ``prefix``, in the archive's order, one at a time."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.startswith(prefix) and info.filename.endswith(".json"):
                with z.open(info) as f:
                    yield info.filename, json.load(f)


def zip_json(path: Path, name: str) -> Any:
    """One JSON member of a zip, or None if it has none of that name."""
    with zipfile.ZipFile(path) as z:
        try:
            with z.open(name) as f:
                return json.load(f)
        except KeyError:
            return None
