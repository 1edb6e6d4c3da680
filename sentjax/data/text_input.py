"""Streaming text input for ``sentjax encode``: one text per record, read a line at a time.

Formats, chosen by the file name (``.gz`` after it is decompressed on the fly):

* ``.txt``: one text per line (split on ``\\n`` only; a trailing ``\\r`` is dropped).
* ``.jsonl``: one JSON object per line; the text is its ``column`` field (default ``text``).
* ``.csv``: comma-separated with a header row and CSV quoting (a quoted text may span lines);
  the text is the ``column`` column.
* ``.tsv``: tab-separated with a header row, no quoting (texts cannot hold tabs or newlines).

Output row ``i`` is input record ``i``, so nothing is skipped: an empty (or whitespace-only)
text, bytes that are not UTF-8, a bad JSON line, a missing field or column all raise
:class:`~sentjax.data.readers.DataFormatError` naming the file and the 1-based line and saying
how to fix it. Memory stays bounded by one line (one CSV record), whatever the file's size.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO

from sentjax.data.readers import DataFormatError

__all__ = ["INPUT_FORMATS", "TextInput", "input_format"]

#: suffix -> description (``--help`` and error messages).
INPUT_FORMATS: dict[str, str] = {
    ".txt": "one text per line",
    ".jsonl": "one JSON object per line, text in --column (default 'text')",
    ".csv": "header row, text in --column (default 'text')",
    ".tsv": "tab-separated, header row, text in --column (default 'text')",
}


def input_format(path: str | os.PathLike) -> str:
    """``txt`` / ``jsonl`` / ``csv`` / ``tsv`` from the file name (``.gz`` ignored)."""
    name = os.fspath(path).lower().removesuffix(".gz")
    suffix = os.path.splitext(name)[1]
    if suffix not in INPUT_FORMATS:
        known = "; ".join(f"{k} ({v})" for k, v in INPUT_FORMATS.items())
        raise DataFormatError(f"{os.fspath(path)}: unknown input extension {suffix or '(none)'!r}; expected {known}, "
                              "optionally gzipped (.gz). Rename the file to say its format.")
    return suffix[1:]


class TextInput:
    """Iterates ``(line_number, text)`` over an input file without loading it.

    Args:
      path: the file; its format comes from its name (:func:`input_format`).
      column: JSON field / CSV or TSV column holding the text.

    ``position()`` is how many bytes of the (possibly gzipped) file were read so far, against
    ``size`` for a progress bar.
    """

    def __init__(self, path: str | os.PathLike, column: str = "text") -> None:
        self.path = os.fspath(path)
        self.format = input_format(self.path)
        self.column = column
        if os.path.isdir(self.path):
            raise DataFormatError(f"{self.path}: is a folder; pass the input file itself.")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"input file {self.path!r} does not exist; check the path.")
        self.size = os.path.getsize(self.path)
        self._raw: IO[bytes] | None = None
        self._count = 0

    def position(self) -> int:
        return self._raw.tell() if self._raw is not None and not self._raw.closed else self.size

    def __iter__(self) -> Iterator[tuple[int, str]]:
        with open(self.path, "rb") as raw:
            self._raw, self._count = raw, 0
            gz = raw.read(2) == b"\x1f\x8b"  # gzip magic: trust content, not the name
            raw.seek(0)
            stream: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw
            lines = self._decoded(stream)
            read = {"txt": self._txt, "jsonl": self._jsonl, "csv": self._csv, "tsv": self._tsv}[self.format]
            try:
                yield from read(lines)
            except (OSError, EOFError) as e:
                if not gz:
                    raise
                raise DataFormatError(f"{self.path}: looks like gzip but cannot be decompressed ({e}); the file "
                                      "is truncated or corrupt, re-copy or re-compress it.") from None
            if self._count == 0:
                raise DataFormatError(f"{self.path}: no texts to encode (the file is empty"
                                      f"{'' if self.format == 'txt' else ' or has only a header'}).")

    # ------------------------------------------------------------------ lines

    def _decoded(self, stream: Iterable[bytes]) -> Iterator[tuple[int, str]]:
        """``(line_number, line)`` with the line ending kept (the CSV reader needs it)."""
        for n, b in enumerate(stream, 1):
            try:
                s = b.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad = b[e.start:e.start + 4]
                raise DataFormatError(
                    f"{self.path}, line {n}: not valid UTF-8 (byte(s) {bad!r} at byte {e.start + 1} of the line). "
                    "sentjax reads UTF-8 text only; convert the file, e.g. `iconv -f latin1 -t utf-8 IN > OUT` "
                    "(with the file's real encoding), then retry.") from None
            yield n, s

    def _text(self, n: int, text: str, where: str) -> tuple[int, str]:
        if not text.strip():
            raise DataFormatError(
                f"{self.path}, line {n}: empty {where}; every record must hold a text to encode (output row i "
                "is input record i, so none is skipped). Remove or fill that record"
                + (", e.g. `grep -v '^[[:space:]]*$' IN > OUT`." if self.format == "txt" else "."))
        self._count += 1
        return n, text

    @staticmethod
    def _strip(line: str) -> str:
        line = line[:-1] if line.endswith("\n") else line
        return line[:-1] if line.endswith("\r") else line

    # ------------------------------------------------------------------ formats

    def _txt(self, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        for n, line in lines:
            yield self._text(n, self._strip(line), "line")

    def _jsonl(self, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        for n, line in lines:
            line = self._strip(line)
            if not line.strip():
                self._text(n, line, "line")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{self.path}, line {n}: not valid JSON ({e.msg} at column {e.colno}); each "
                                      "line of a .jsonl file must be one JSON object.") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{self.path}, line {n}: a JSON {type(obj).__name__}, expected an object "
                                      f"with a {self.column!r} field.")
            if self.column not in obj:
                raise DataFormatError(f"{self.path}, line {n}: no field {self.column!r} (fields: "
                                      f"{', '.join(map(repr, obj)) or 'none'}); pass --column NAME.")
            text = obj[self.column]
            if not isinstance(text, str):
                raise DataFormatError(f"{self.path}, line {n}: field {self.column!r} is a JSON "
                                      f"{type(text).__name__}, expected a string.")
            yield self._text(n, text, f"field {self.column!r}")

    def _header_index(self, header: list[str], n: int) -> int:
        if self.column not in header:
            raise DataFormatError(f"{self.path}, line {n}: no column {self.column!r} in the header "
                                  f"{header}; pass --column NAME (the header row names the columns).")
        return header.index(self.column)

    def _tsv(self, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        idx = width = -1
        for n, line in lines:
            row = self._strip(line).split("\t")
            if idx >= 0 and not line.strip():
                self._text(n, "", "line")
            if idx < 0:
                idx, width = self._header_index(row, n), len(row)
                continue
            if len(row) != width:
                raise DataFormatError(f"{self.path}, line {n}: {len(row)} tab-separated columns, the header has "
                                      f"{width}; texts must not contain tabs (use .csv with quoting).")
            yield self._text(n, row[idx], f"column {self.column!r}")

    def _csv(self, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        last = [0]

        def physical() -> Iterator[str]:
            for n, line in lines:
                last[0] = n
                yield line

        reader = csv.reader(physical())
        idx = width = -1
        start = 1
        try:
            for row in reader:
                if not row:
                    self._text(start, "", "line")
                if idx < 0:
                    idx, width = self._header_index(row, start), len(row)
                elif len(row) != width:
                    raise DataFormatError(f"{self.path}, line {start}: {len(row)} columns, the header has {width}; "
                                          "quote texts that contain commas (\"a, b\").")
                else:
                    yield self._text(start, row[idx], f"column {self.column!r}")
                start = last[0] + 1
        except csv.Error as e:
            raise DataFormatError(f"{self.path}, line {last[0]}: {e}; fix the CSV quoting there.") from None
