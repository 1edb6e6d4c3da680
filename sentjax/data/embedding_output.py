"""Streaming embedding files for ``sentjax encode``: rows are appended as they are computed.

* ``.npy``: a float32 ``[n, dim]`` array (``np.load``). The header is written first for 0 rows and
  rewritten in place for ``n`` at the end: NumPy pads every header with room for the first axis
  to grow to 21 digits, so its length does not change.
* ``.safetensors``: one float32 tensor ``embeddings`` ``[n, dim]`` (``safetensors.numpy.load_file``)
  plus string metadata. The JSON header is reserved up front with room for any ``n`` and padded
  with spaces, which the safetensors format allows, then rewritten at the end.
* ``.parquet`` (needs ``pyarrow``): one ``embedding`` column of ``fixed_size_list<float32>[dim]``,
  one row group per chunk, metadata in the schema.

Everything goes to ``<output>.partial`` and is renamed onto ``output`` only when complete, so a
failed or interrupted run never leaves a truncated file under the final name (nor clobbers an
older one).
"""
from __future__ import annotations

import abc
import json
import os
import struct
from typing import Any

import numpy as np

from sentjax.data.readers import DataFormatError

__all__ = ["OUTPUT_FORMATS", "EmbeddingWriter", "open_writer", "output_format"]

OUTPUT_FORMATS: dict[str, str] = {
    ".npy": "float32 [n, dim] NumPy array",
    ".safetensors": "tensor 'embeddings' [n, dim] float32 plus metadata",
    ".parquet": "column 'embedding' (fixed-size list of float32); needs pyarrow",
}


def output_format(path: str | os.PathLike) -> str:
    """``npy`` / ``safetensors`` / ``parquet`` from the file name; parquet checks pyarrow is there."""
    suffix = os.path.splitext(os.fspath(path).lower())[1]
    if suffix not in OUTPUT_FORMATS:
        known = "; ".join(f"{k} ({v})" for k, v in OUTPUT_FORMATS.items())
        raise DataFormatError(f"{os.fspath(path)}: unknown output extension {suffix or '(none)'!r}; expected {known}.")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataFormatError(f"{os.fspath(path)}: writing .parquet needs pyarrow (`pip install pyarrow`); or "
                                  "write .npy or .safetensors instead.") from None
    return suffix[1:]


class EmbeddingWriter(abc.ABC):
    """Appends ``[k, dim]`` float32 blocks; ``close()`` finishes the file, ``abort()`` removes it.

    Use as a context manager: leaving it by an exception aborts, otherwise it closes.
    """

    def __init__(self, path: str | os.PathLike, dim: int, metadata: dict[str, str] | None = None) -> None:
        self.path = os.fspath(path)
        self.dim = int(dim)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.rows = 0
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self.partial = self.path + ".partial"
        self._open()

    def write(self, emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype="<f4")
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"expected embeddings [k, {self.dim}], got {list(emb.shape)}.")
        self._write(emb)
        self.rows += emb.shape[0]

    def close(self) -> str:
        self._finish()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._close_quietly()
        finally:
            if os.path.exists(self.partial):
                os.remove(self.partial)

    def __enter__(self) -> "EmbeddingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # Format hooks.
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _write(self, emb: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _finish(self) -> None: ...

    @abc.abstractmethod
    def _close_quietly(self) -> None: ...


class _FileWriter(EmbeddingWriter):
    """A header that is rewritten in place at the end, then raw little-endian float32 rows."""

    def _open(self) -> None:
        self._f = open(self.partial, "wb")
        self._f.write(self._header(0))
        self._data_start = self._f.tell()

    def _write(self, emb: np.ndarray) -> None:
        self._f.write(emb.tobytes())

    def _finish(self) -> None:
        header = self._header(self.rows)
        if len(header) != self._data_start:  # cannot happen below 10**20 rows; never write a bad file
            raise RuntimeError(f"{self.path}: header grew from {self._data_start} to {len(header)} bytes.")
        self._f.seek(0)
        self._f.write(header)
        self._f.close()

    def _close_quietly(self) -> None:
        self._f.close()

    @abc.abstractmethod
    def _header(self, rows: int) -> bytes: ...


class _NpyWriter(_FileWriter):

    def _header(self, rows: int) -> bytes:
        import io
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dim)})
        return buf.getvalue()


class _SafetensorsWriter(_FileWriter):
    _ROOM = 48  # spare header bytes: the row count and byte offset grow by at most 2 x 20 digits

    def _json(self, rows: int) -> bytes:
        header: dict[str, Any] = {"embeddings": {"dtype": "F32", "shape": [rows, self.dim],
                                                 "data_offsets": [0, rows * self.dim * 4]}}
        if self.metadata:
            header["__metadata__"] = self.metadata
        return json.dumps(header, separators=(",", ":")).encode("utf-8")

    def _header(self, rows: int) -> bytes:
        if rows == 0:  # the reserved size, a multiple of 8 so the data stays aligned
            self._size = -(-(len(self._json(0)) + self._ROOM) // 8) * 8
        body = self._json(rows)
        return struct.pack("<Q", self._size) + body + b" " * (self._size - len(body))


class _ParquetWriter(EmbeddingWriter):

    def _open(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        self._type = pa.list_(pa.float32(), self.dim)
        schema = pa.schema([pa.field("embedding", self._type)],
                           metadata={k.encode(): v.encode() for k, v in self.metadata.items()})
        self._w = pq.ParquetWriter(self.partial, schema)

    def _write(self, emb: np.ndarray) -> None:
        import pyarrow as pa
        col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), self.dim)
        self._w.write_table(pa.Table.from_arrays([col], schema=self._w.schema))

    def _finish(self) -> None:
        self._w.close()

    def _close_quietly(self) -> None:
        self._w.close()


_WRITERS: dict[str, type[EmbeddingWriter]] = {"npy": _NpyWriter, "safetensors": _SafetensorsWriter,
                                              "parquet": _ParquetWriter}


def open_writer(path: str | os.PathLike, dim: int, metadata: dict[str, str] | None = None) -> EmbeddingWriter:
    """The writer for ``path``'s extension (:data:`OUTPUT_FORMATS`); metadata is ignored by ``.npy``."""
    return _WRITERS[output_format(path)](path, dim, metadata)
