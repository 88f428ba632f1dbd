"""One memory of the image, and its file formats.

A :class:`MemoryImage` is ``depth`` words of ``width`` bits (at most 64), held as two's-complement
codes in a uint64 array, with the packing of its fields. It is written as:

* ``.mem``: ``$readmemh`` text, one hex word per line (``ceil(width/4)`` digits);
* ``.coe``: Xilinx ``memory_initialization_vector``;
* ``.mif``: Intel memory initialization file (``addr : data;``);
* ``.bin``: raw little-endian words of ``ceil(width/8)`` bytes each;
* a C array in the image's header file.

Every text format is produced by vectorised digit extraction, so a 10 M-word memory writes in seconds.
Each format also has a reader (:meth:`MemoryImage.parse`), so that every file of a memory can be
checked to hold the very words of the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snncompile.errors import SnnCompileError

FORMATS = ("bin", "mem", "coe", "mif")
"""Every file format of a memory; ``.bin`` is the one the others are checked against."""

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class ImageError(SnnCompileError):
    """A memory image that cannot be built or read: a field out of range, a bad or truncated file."""


@dataclasses.dataclass(frozen=True)
class Field:
    """Bits ``[lsb, lsb + width)`` of every word hold ``name``, signed or unsigned."""

    name: str
    lsb: int
    width: int
    signed: bool


@dataclasses.dataclass(frozen=True, eq=False)
class MemoryImage:
    """``words`` (uint64, two's complement in ``width`` bits) and the fields packed into each word."""

    name: str
    width: int
    words: np.ndarray
    fields: tuple[Field, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 64:
            raise ImageError(f"memory {self.name!r}: width {self.width} must be 1..64 bits")
        if self.words.dtype != np.uint64 or self.words.ndim != 1:
            raise ImageError(f"memory {self.name!r}: words must be a 1-d uint64 array")
        if self.width < 64 and self.words.size and int(self.words.max()) >> self.width:
            raise ImageError(f"memory {self.name!r}: a word is wider than {self.width} bits")

    @property
    def depth(self) -> int:
        return int(self.words.size)

    @property
    def bytes_per_word(self) -> int:
        return (self.width + 7) // 8

    @classmethod
    def pack(
        cls, name: str, fields: tuple[Field, ...], values: dict[str, np.ndarray], source: str = ""
    ) -> MemoryImage:
        """Packs equal-length integer arrays into words, refusing values their field cannot hold."""
        width = max(f.lsb + f.width for f in fields)
        depth = len(next(iter(values.values()))) if values else 0
        words = np.zeros(depth, np.uint64)
        for f in fields:
            v = np.asarray(values[f.name], dtype=np.int64)
            lo, hi = (
                (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else (0, (1 << f.width) - 1)
            )
            if v.size and (int(v.min()) < lo or int(v.max()) > hi):
                bad = int(v[(v < lo) | (v > hi)][0])
                raise ImageError(
                    f"memory {name!r}: field {f.name} holds {bad}, outside its {f.width}-bit "
                    f"{'signed' if f.signed else 'unsigned'} range [{lo}, {hi}] (source {source or 'image'})"
                )
            mask = np.uint64((1 << f.width) - 1) if f.width < 64 else np.uint64(2**64 - 1)
            words |= (v.astype(np.uint64) & mask) << np.uint64(f.lsb)
        return cls(name, width, words, fields, source)

    def unpack(self, name: str) -> np.ndarray:
        """The int64 values of field ``name`` in every word."""
        f = next((f for f in self.fields if f.name == name), None)
        if f is None:
            raise ImageError(f"memory {self.name!r} has no field {name!r}")
        raw = (self.words >> np.uint64(f.lsb)) & np.uint64((1 << f.width) - 1 if f.width < 64 else 2**64 - 1)
        v = raw.astype(np.int64)
        if f.signed and f.width < 64:
            v = np.where(v >= 1 << (f.width - 1), v - (1 << f.width), v)
        return v

    # --------------------------------------------------------------------------------- formats

    def hex_digits(self) -> np.ndarray:
        """(depth, ceil(width/4)) ASCII hex digits, most significant first."""
        n = (self.width + 3) // 4
        shifts = np.arange(n - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
        nibbles = (self.words[:, None] >> shifts[None, :]) & np.uint64(15)
        return _HEX[nibbles.astype(np.intp)]

    def _lines(self, prefix: bytes, suffix: bytes, digits: np.ndarray | None = None) -> bytes:
        d = self.hex_digits() if digits is None else digits
        parts = (
            [np.broadcast_to(np.frombuffer(prefix, np.uint8), (d.shape[0], len(prefix)))] if prefix else []
        )
        parts += [d, np.broadcast_to(np.frombuffer(suffix, np.uint8), (d.shape[0], len(suffix)))]
        return np.ascontiguousarray(np.concatenate(parts, axis=1)).tobytes()

    def to_mem(self) -> bytes:
        header = f"// {self.name}: {self.depth} x {self.width} bits ({self.source})\n".encode()
        return header + self._lines(b"", b"\n")

    def to_coe(self) -> bytes:
        head = f"; {self.name}: {self.depth} x {self.width} bits\nmemory_initialization_radix=16;\nmemory_initialization_vector=\n"
        body = self._lines(b"", b",\n")
        body = body[:-2] + b";\n" if body else b";\n"
        return head.encode() + body

    def to_mif(self) -> bytes:
        head = f"-- {self.name}\nWIDTH={self.width};\nDEPTH={max(self.depth, 1)};\nADDRESS_RADIX=HEX;\nDATA_RADIX=HEX;\nCONTENT BEGIN\n"
        addr_width = max(1, (max(self.depth - 1, 0).bit_length() + 3) // 4)
        addrs = MemoryImage("addr", 64, np.arange(self.depth, dtype=np.uint64), ()).hex_digits()[
            :, -addr_width:
        ]
        sep = np.broadcast_to(np.frombuffer(b" : ", np.uint8), (self.depth, 3))
        rows = np.concatenate(
            [
                addrs,
                sep,
                self.hex_digits(),
                np.broadcast_to(np.frombuffer(b";\n", np.uint8), (self.depth, 2)),
            ],
            axis=1,
        )
        empty = b"" if self.depth else b"0 : 0;\n"
        return head.encode() + np.ascontiguousarray(rows).tobytes() + empty + b"END;\n"

    def render(self, ext: str) -> bytes:
        """The file of format ``ext`` (one of :data:`FORMATS`)."""
        writers = {"bin": self.to_bin, "mem": self.to_mem, "coe": self.to_coe, "mif": self.to_mif}
        return writers[ext]()

    @classmethod
    def parse(
        cls,
        ext: str,
        name: str,
        width: int,
        depth: int,
        data: bytes,
        fields: tuple[Field, ...],
        source: str = "",
    ) -> MemoryImage:
        """The memory held by a file of format ``ext``; :class:`ImageError` when it is malformed."""
        if ext == "bin":
            return cls.from_bin(name, width, depth, data, fields, source)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ImageError(f"memory {name!r}: its .{ext} file is not ASCII text") from None
        readers = {"mem": cls.from_mem, "coe": cls.from_coe, "mif": cls.from_mif}
        return readers[ext](name, width, depth, text, fields, source)

    def to_bin(self) -> bytes:
        return self.words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : self.bytes_per_word].tobytes()

    def c_array(self) -> str:
        ctype = (
            "uint64_t"
            if self.width > 32
            else "uint32_t"
            if self.width > 16
            else "uint16_t"
            if self.width > 8
            else "uint8_t"
        )
        digits = self._lines(b"  0x", b",\n").decode()
        return (
            f"/* {self.name}: {self.depth} x {self.width} bits; {self.source} */\n"
            f"static const {ctype} {self.name}[{max(self.depth, 1)}] = {{\n{digits or '  0,'}\n}};\n"
        )

    @classmethod
    def from_bin(
        cls, name: str, width: int, depth: int, data: bytes, fields: tuple[Field, ...], source: str = ""
    ) -> MemoryImage:
        nbytes = (width + 7) // 8
        if len(data) != depth * nbytes:
            raise ImageError(
                f"memory {name!r}: {len(data)} bytes for {depth} words of {nbytes} bytes (expected {depth * nbytes}): truncated or padded"
            )
        raw = np.zeros((depth, 8), np.uint8)
        raw[:, :nbytes] = np.frombuffer(data, np.uint8).reshape(depth, nbytes)
        words = raw.view("<u8").reshape(depth).astype(np.uint64)
        if width < 64 and depth and int(words.max()) >> width:
            raise ImageError(f"memory {name!r}: a word has bits above its width {width}")
        return cls(name, width, words, fields, source)

    @classmethod
    def from_hex_words(
        cls,
        ext: str,
        name: str,
        width: int,
        depth: int,
        words: list[str],
        fields: tuple[Field, ...],
        source: str,
    ) -> MemoryImage:
        """The memory of the hex words a text file of format ``ext`` holds."""
        if len(words) != depth:
            raise ImageError(
                f"memory {name!r}: the .{ext} file has {len(words)} words, the manifest says {depth}"
            )
        try:
            values = [int(w, 16) for w in words]
        except ValueError:
            raise ImageError(
                f"memory {name!r}: the .{ext} file holds a word that is not hexadecimal"
            ) from None
        if any(v < 0 or v >> width for v in values):
            raise ImageError(f"memory {name!r}: a .{ext} word is wider than {width} bits")
        return cls(name, width, np.array(values, dtype=np.uint64), fields, source)

    @classmethod
    def from_mem(
        cls, name: str, width: int, depth: int, text: str, fields: tuple[Field, ...], source: str = ""
    ) -> MemoryImage:
        """``$readmemh`` text: one hex word per line, ``//`` comment lines."""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("//")]
        if len(lines) > depth:  # before parsing anything: the depth bounds the work
            raise ImageError(
                f"memory {name!r}: the .mem file has {len(lines)} words, the manifest says {depth}"
            )
        return cls.from_hex_words("mem", name, width, depth, lines, fields, source)

    @classmethod
    def from_coe(
        cls, name: str, width: int, depth: int, text: str, fields: tuple[Field, ...], source: str = ""
    ) -> MemoryImage:
        """Xilinx ``.coe``: ``;`` comment lines, radix 16, the vector's words separated by ``,``, then ``;``."""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(";")]
        if lines[:2] != ["memory_initialization_radix=16;", "memory_initialization_vector="]:
            raise ImageError(f"memory {name!r}: the .coe file does not start with a radix-16 vector")
        body = "".join(lines[2:])
        if not body.endswith(";") or ";" in body[:-1]:
            raise ImageError(f"memory {name!r}: the .coe vector does not end with one ';'")
        words = [w.strip() for w in body[:-1].split(",")] if body[:-1] else []
        return cls.from_hex_words("coe", name, width, depth, words, fields, source)

    @classmethod
    def from_mif(
        cls, name: str, width: int, depth: int, text: str, fields: tuple[Field, ...], source: str = ""
    ) -> MemoryImage:
        """Intel ``.mif``: WIDTH/DEPTH/radix header, then ``addr : word;`` rows in address order between
        ``CONTENT BEGIN`` and ``END;`` (an empty memory holds the one row ``0 : 0;``)."""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        header = [f"WIDTH={width};", f"DEPTH={max(depth, 1)};", "ADDRESS_RADIX=HEX;", "DATA_RADIX=HEX;"]
        if lines[:5] != [*header, "CONTENT BEGIN"] or lines[-1:] != ["END;"]:
            raise ImageError(f"memory {name!r}: the .mif header or end is not {header} ... END;")
        if any(not ln.endswith(";") or ln.count(":") != 1 for ln in lines[5:-1]):
            raise ImageError(f"memory {name!r}: a .mif row is not 'address : word;'")
        rows = [[c.strip() for c in ln[:-1].split(":")] for ln in lines[5:-1]]
        if depth == 0 and rows == [["0", "0"]]:
            rows = []
        try:
            in_order = all(int(r[0], 16) == i for i, r in enumerate(rows))
        except ValueError:
            in_order = False
        if not in_order:
            raise ImageError(f"memory {name!r}: the .mif rows are not at addresses 0, 1, 2, ... in order")
        return cls.from_hex_words("mif", name, width, depth, [r[1] for r in rows], fields, source)
