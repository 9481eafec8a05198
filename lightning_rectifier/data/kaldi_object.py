r"""Reading Kaldi objects token by token, binary or text, with errors that say what was expected where.

Kaldi writes its models as a sequence of tokens (``<TransitionModel>``), sized integers and floats (a size byte, then
the value) and vectors (``FV``/``DV`` + length + values in binary; ``[ ... ]`` in text). :class:`KaldiObjectReader`
reads those pieces from either form, so one reader function per object serves both.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from lightning_rectifier.data.errors import KaldiFormatError

__all__ = ["KaldiObjectReader"]

_TOKEN = re.compile(rb"\s*(\S{1,64})(?:\s|\Z)")  # Kaldi tokens are short; garbage fails fast


class KaldiObjectReader:
    r"""Cursor over a Kaldi object, binary or text; each read names what it wanted if the data is not there.

    Args:
        data: The object's bytes (binary ones start with ``\0B``).
        source: The file, for messages.
        kind: What the object is (``TransitionModel``, ``AmDiagGmm``), for messages.

    Example:
        >>> reader = KaldiObjectReader(b"<Dim> 3 [ 1 2.5 ]", "x.mdl", "toy")
        >>> reader.expect("<Dim>"); reader.int32("the dimension"), reader.float_vector("the means").tolist()
        (3, [1.0, 2.5])
        >>> try:
        ...     reader.int32("a count")
        ... except KaldiFormatError as error:
        ...     print(str(error)[:62])
        x.mdl: token 6: expected a count in a text Kaldi toy, got the
    """

    def __init__(self, data: bytes, source: str, kind: str = "TransitionModel") -> None:
        self.binary, self.source, self.data, self.kind = data.startswith(b"\0B"), source, data, kind
        self.tokens, self.pos = ([], 2) if self.binary else (data.decode("latin-1").split(), 0)

    def fail(self, what: str, got: str) -> KaldiFormatError:
        """The error for a read that wanted ``what`` and found ``got`` (file, position, object kind)."""
        place = f"byte {self.pos}" if self.binary else f"token {self.pos}"  # where the read began / the last token
        return KaldiFormatError(
            f"{self.source}: {place}: expected {what} in a {'binary' if self.binary else 'text'} Kaldi"
            f" {self.kind}, got {got} (is the file truncated or not a Kaldi model?)"
        )

    def take(self, size: int, what: str) -> bytes:
        """The next ``size`` raw bytes (binary)."""
        if self.pos + size > len(self.data):
            raise self.fail(what, f"the end of the data ({len(self.data)} bytes)")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def token(self, what: str) -> str:
        """The next token (``<Tag>``, ``FV``, or a number in text form)."""
        if not self.binary:
            if self.pos >= len(self.tokens):
                raise self.fail(what, "the end of the file")
            self.pos += 1
            return self.tokens[self.pos - 1]
        match = _TOKEN.match(self.data, self.pos)
        if match is None:
            raise self.fail(what, repr(self.data[self.pos : self.pos + 16]))
        self.pos = match.end()
        return match.group(1).decode("latin-1")

    def expect(self, token: str) -> None:
        """Reads ``token`` or raises."""
        start = self.pos
        if (got := self.token(token)) != token:
            self.pos = start if self.binary else self.pos
            raise self.fail(token, repr(got))

    def size_byte(self, what: str, sizes: tuple[int, ...] = (4,)) -> int:
        """A binary size byte, one of ``sizes``."""
        if (size := self.take(1, what)[0]) not in sizes:
            self.pos -= 1
            raise self.fail(what, f"size byte {size} where {' or '.join(map(str, sizes))} belongs")
        return size

    def int32(self, what: str, token: str | None = None) -> int:
        """An int32 (binary: size byte 4 and 4 bytes; text: the next token, or ``token`` already read)."""
        if self.binary:
            self.size_byte(what)
            return int.from_bytes(self.take(4, what), "little", signed=True)
        token = self.token(what) if token is None else token
        if not re.fullmatch(r"[-+]?\d{1,10}", token) or not -(2**31) <= int(token) < 2**31:
            raise self.fail(f"{what} (an int32)", repr(token))
        return int(token)

    def count(self, what: str) -> int:
        """A non-negative int32."""
        if (value := self.int32(what)) < 0:
            raise self.fail(what, str(value))
        return value

    def float(self, what: str, token: str | None = None) -> float:
        """A float or double (binary: size byte 4 or 8)."""
        if self.binary:
            fmt = "<f" if self.size_byte(what, (4, 8)) == 4 else "<d"
            return float(struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0])
        token = self.token(what) if token is None else token
        try:
            return float(token)
        except ValueError:
            raise self.fail(what, repr(token)) from None

    def int_vector(self, what: str) -> list[int]:
        """A binary ``std::vector<int32>`` (size byte, length, raw values)."""
        self.size_byte(what)  # binary only: one size byte, then a raw int32 length and the raw values
        if (size := int.from_bytes(self.take(4, what), "little", signed=True)) < 0:
            raise self.fail(what, f"length {size}")
        return np.frombuffer(self.take(4 * size, what), "<i4").tolist()

    def float_vector(self, what: str) -> np.ndarray:
        """A Kaldi vector (binary ``FV``/``DV``; text ``[ ... ]``) as float32."""
        if not self.binary:
            self.expect("[")
            values = []
            while (token := self.token(f"a number or ] in {what}")) != "]":
                values.append(self.float(f"a number or ] in {what}", token))
            return np.array(values, np.float32)
        if (kind := self.token(f"FV or DV starting {what}")) not in ("FV", "DV"):
            raise self.fail(f"FV or DV starting {what}", repr(kind))
        dtype = np.dtype("<f4" if kind == "FV" else "<f8")
        size = self.count(f"the length of {what}")
        return np.frombuffer(self.take(size * dtype.itemsize, what), dtype).astype(np.float32)

    def float_matrix(self, what: str, num_cols: int) -> np.ndarray:
        """A Kaldi matrix (binary ``FM``/``DM`` with its shape; text ``[ rows ]``) as float32 ``(rows, num_cols)``."""
        if not self.binary:
            self.expect("[")
            values = []
            while (token := self.token(f"a number or ] in {what}")) != "]":
                values.append(self.float(f"a number or ] in {what}", token))
            if len(values) % num_cols:
                raise self.fail(f"{what} with {num_cols} columns", f"{len(values)} numbers")
            return np.array(values, np.float32).reshape(-1, num_cols)
        if (kind := self.token(f"FM or DM starting {what}")) not in ("FM", "DM"):
            raise self.fail(f"FM or DM starting {what}", repr(kind))
        dtype = np.dtype("<f4" if kind == "FM" else "<f8")
        rows, cols = self.count(f"the rows of {what}"), self.count(f"the columns of {what}")
        if cols != num_cols:
            raise self.fail(f"{what} with {num_cols} columns", f"{cols} columns")
        data = self.take(rows * cols * dtype.itemsize, what)
        return np.frombuffer(data, dtype).reshape(rows, cols).astype(np.float32)
