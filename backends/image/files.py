"""Image directories: every memory in every format, a C header and ``manifest.json``; and the reader.

The manifest records, per memory, its width, depth, base address (byte address in one flat map,
4 KiB aligned), field packing, signedness, source and the sha256 of each file, plus the image format
version, the compiler version, the target and the node names. Output is deterministic: the same graph
and target give byte-identical files.

Reading (:func:`load_image`) checks every word of every file, in this order, and refuses the first
mismatch with one line naming the memory (or file), the word and both values:

1. each memory's ``.bin`` matches its sha256 and decodes to words; each of its ``.mem``, ``.coe`` and
   ``.mif`` files matches its sha256 and holds the very same words, written the same way;
2. the words decode to a valid program (:func:`~snncompile.backends.image.layout.decode`);
3. encoding that program again gives back every word of every memory
   (:func:`~snncompile.backends.image.layout.check_words`: unused record fields, the zero initial
   state, the unrolled conv rows re-derived from the decoded kernel);
4. ``image.h`` and ``manifest.json`` are what the writer makes of those words (the manifest's
   compiler string aside).

So a program read from an image is the image: every consumer (the simulator, the RTL driver, which
writes its ``.mem`` files from the verified words) runs exactly what was checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from snncompile.backends.image.layout import (
    LOGICAL,
    NEURON_FIELDS,
    RECORD,
    RECORD_FIELDS,
    VERSION,
    check_words,
    decode,
    encode,
)
from snncompile.backends.image.memory import FORMATS, Field, ImageError, MemoryImage

from snncompile._version import __version__
from snncompile.errors import SnnCompileError
from snncompile.ir import Graph
from snncompile.loading import write_atomic
from snncompile.targets import Target

FORMAT = "snncompile.image"
_ALIGN = 4096


def _header(memories: dict[str, MemoryImage], target: str) -> str:
    lines = [
        "/* snncompile weight-memory image — generated, do not edit. */",
        "#ifndef SNNCOMPILE_IMAGE_H",
        "#define SNNCOMPILE_IMAGE_H",
        "#include <stdint.h>",
        f"#define SNN_TARGET {json.dumps(target, ensure_ascii=True)}",
        f"#define SNN_IMAGE_VERSION {VERSION}",
        f"#define SNN_LAYER_RECORD_WORDS {RECORD}",
    ]
    for name, m in memories.items():
        lines += [
            f"#define SNN_{name.upper()}_WIDTH {m.width}",
            f"#define SNN_{name.upper()}_DEPTH {m.depth}",
        ]
    for i, field in enumerate(RECORD_FIELDS):
        lines.append(f"#define SNN_REC_{field.upper()} {i}")
    lines.append("")
    body = "\n".join(m.c_array() for m in memories.values())
    return "\n".join(lines) + "\n" + body + "#endif\n"


def image_files(
    graph: Graph, target: Target, memories: dict[str, MemoryImage] | None = None
) -> dict[str, bytes]:
    """Every file of the image directory, by name (nothing written yet); ``memories`` defaults to
    ``encode(graph, target)``."""
    memories = encode(graph, target) if memories is None else memories
    return _files(graph, target.name, memories, f"snncompile {__version__}")


def _files(graph: Graph, target: str, memories: dict[str, MemoryImage], compiler: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    address = 0
    for name, m in memories.items():
        blobs = {ext: m.render(ext) for ext in FORMATS}
        for ext, blob in blobs.items():
            files[f"{name}.{ext}"] = blob
        entries.append(
            {
                "name": name,
                "width": m.width,
                "depth": m.depth,
                "base_address": address,
                "bytes_per_word": m.bytes_per_word,
                "signed": any(f.signed for f in m.fields),
                "fields": [
                    {"name": f.name, "lsb": f.lsb, "width": f.width, "signed": f.signed} for f in m.fields
                ],
                "source": m.source,
                "files": {ext: f"{name}.{ext}" for ext in blobs},
                "sha256": {ext: hashlib.sha256(blob).hexdigest() for ext, blob in blobs.items()},
            }
        )
        address += -(-m.depth * m.bytes_per_word // _ALIGN) * _ALIGN
    files["image.h"] = _header(memories, target).encode()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "compiler": compiler,
        "target": target,
        "layer_record": {"words": RECORD, "fields": list(RECORD_FIELDS)},
        "nodes": [{"name": n, "source": graph.source(n)} for n in graph.topo_order()],
        "memories": entries,
        "header": {"file": "image.h", "sha256": hashlib.sha256(files["image.h"]).hexdigest()},
    }
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def write_image(graph: Graph, target: Target, directory: str | os.PathLike[str]) -> None:
    """Writes the image of ``graph`` into ``directory`` (which must exist)."""
    for name, blob in image_files(graph, target).items():
        write_atomic(Path(directory) / name, blob)


_EXPECTED_FIELDS = {
    "layers": (Field("word", 0, 32, True),),
    "bias": (Field("value", 0, 32, True),),
    "neuron": NEURON_FIELDS,
}


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ImageError(message)


def _memory(directory: Path, entry: Any) -> MemoryImage:
    _expect(isinstance(entry, dict), "manifest: a memory entry is not an object")
    name = entry.get("name")
    _expect(name in LOGICAL, f"manifest: unknown memory {name!r}; expected {list(LOGICAL)}")
    width, depth = entry.get("width"), entry.get("depth")
    _expect(
        isinstance(width, int) and 1 <= width <= 64, f"manifest: memory {name!r} width {width!r} is not 1..64"
    )
    _expect(
        isinstance(depth, int) and 0 <= depth <= 1 << 31,
        f"manifest: memory {name!r} depth {depth!r} is out of range",
    )
    try:
        fields = tuple(
            Field(f["name"], int(f["lsb"]), int(f["width"]), bool(f["signed"])) for f in entry["fields"]
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ImageError(f"manifest: memory {name!r} has malformed fields") from None
    expected = _EXPECTED_FIELDS.get(name)
    if expected is not None:
        _expect(
            fields == expected,
            f"manifest: memory {name!r} fields {fields} differ from image version {VERSION}",
        )
    else:
        _expect(len(fields) == 1 and fields[0].lsb == 0 and fields[0].width == width and fields[0].signed,
                f"manifest: memory {name!r} must hold one signed field of its width")  # fmt: skip
    files, sums = entry.get("files", {}), entry.get("sha256", {})
    _expect(
        isinstance(files, dict) and isinstance(sums, dict), f"manifest: memory {name!r} has no file table"
    )
    source = entry.get("source", "")
    _expect(isinstance(source, str), f"manifest: memory {name!r} source {source!r} is not a string")
    blobs = {ext: _read_file(directory, name, ext, files, sums) for ext in FORMATS}
    intact = [ext for ext in FORMATS if hashlib.sha256(blobs[ext]).hexdigest() == sums[ext]]
    ref = intact[0] if intact else FORMATS[0]  # .bin unless it was edited: the others are checked against it
    image = MemoryImage.parse(ref, name, width, depth, blobs[ref], fields, source) if intact else None
    for ext in FORMATS:
        if ext not in intact:
            where = ""
            if image is not None:
                try:
                    edited = MemoryImage.parse(ext, name, width, depth, blobs[ext], fields, source)
                    where = f": {_word_difference(image, edited, ref, ext) or 'same words, other text'}"
                except ImageError as e:
                    where = f": {str(e).removeprefix(f'memory {name!r}: ')}"
            raise ImageError(
                f"memory {name!r}: {files[ext]} does not match its sha256 (corrupt or edited){where}"
            )
        if image is not None and blobs[ext] != image.render(ext):
            edited = MemoryImage.parse(ext, name, width, depth, blobs[ext], fields, source)
            difference = _word_difference(image, edited, ref, ext)
            _expect(difference is None, f"memory {name!r} {difference} (its formats disagree)")
            _first_line_difference(f"{name}.{ext}", blobs[ext], image.render(ext), "the text of its words")
    assert image is not None
    return image


def _read_file(directory: Path, name: str, ext: str, files: dict[str, Any], sums: dict[str, Any]) -> bytes:
    """The bytes of memory ``name``'s ``.ext`` file, which the manifest must list with a sha256."""
    _expect(ext in files and ext in sums, f"manifest: memory {name!r} lists no .{ext} file and sha256")
    filename = files[ext]
    plain = isinstance(filename, str) and not set(filename) & {"/", "\\", "\x00"}
    _expect(
        plain and filename not in ("", ".", ".."),
        f"manifest: memory {name!r} file name {filename!r} is not a plain file name",
    )
    path = directory / filename
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"memory {name!r}: cannot read {str(path)!r}: {e.strerror}") from None
    return data


def _word_difference(ref: MemoryImage, other: MemoryImage, ref_ext: str, ext: str) -> str | None:
    """``word N is X in name.ext but Y in name.ref_ext`` for the first word that differs, else None."""
    differs = np.flatnonzero(other.words != ref.words)
    if not differs.size:
        return None
    w, digits, name = int(differs[0]), (ref.width + 3) // 4, ref.name
    return (
        f"word {w} is 0x{int(other.words[w]):0{digits}x} in {name}.{ext} but "
        f"0x{int(ref.words[w]):0{digits}x} in {name}.{ref_ext}"
    )


def _first_line_difference(filename: str, got: bytes, want: bytes, what: str) -> None:
    got_lines, want_lines = got.split(b"\n"), want.split(b"\n")
    line = next(
        (i for i, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)) if a != b),
        min(len(got_lines), len(want_lines)),
    )
    found = got_lines[line] if line < len(got_lines) else b"(end of file)"
    expected = want_lines[line] if line < len(want_lines) else b"(end of file)"
    raise ImageError(f"{filename} line {line + 1} is {found[:80]!r}, {what} give {expected[:80]!r} (edited)")


def _diff(got: Any, want: Any, path: str) -> str | None:
    """The first place where two JSON values differ, as ``path: got ... expected ...``."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want)):
            if key not in got or key not in want:
                return f"{path}[{key!r}] is {'missing' if key not in got else 'not expected'}"
            found = _diff(got[key], want[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return next(
            (d for i, (a, b) in enumerate(zip(got, want, strict=True)) if (d := _diff(a, b, f"{path}[{i}]"))),
            None,
        )
    return (
        None if got == want and type(got) is type(want) else f"{path} is {got!r:.80}, expected {want!r:.80}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Image:
    """A verified image: its program, its memories (every word checked) and its manifest."""

    graph: Graph
    memories: dict[str, MemoryImage]
    manifest: dict[str, Any]


def read_image(directory: str | os.PathLike[str]) -> Graph:
    """The fixed-point graph of an image directory; any malformed input is an :class:`ImageError`."""
    return load_image(directory).graph


def load_image(directory: str | os.PathLike[str]) -> Image:
    """The verified image in ``directory`` (every word checked, see the module doc); any malformed
    or edited input is an :class:`ImageError`."""
    root = Path(directory)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        raise ImageError(f"{str(root)!r} has no manifest.json (not an snncompile image)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: bad JSON
        raise ImageError(f"cannot read {str(root / 'manifest.json')!r}: {type(e).__name__}: {e}") from None
    _expect(
        isinstance(manifest, dict) and manifest.get("format") == FORMAT,
        f"{str(root)!r}: manifest is not an {FORMAT} manifest",
    )
    _expect(
        manifest.get("version") == VERSION,
        f"image version {manifest.get('version')!r} is not supported (this snncompile reads {VERSION})",
    )
    entries = manifest.get("memories")
    _expect(isinstance(entries, list), "manifest: 'memories' must be a list")
    memories = {m.name: m for m in (_memory(root, e) for e in entries)}
    nodes = manifest.get("nodes")
    names = sources = None
    if isinstance(nodes, list) and all(isinstance(n, dict) for n in nodes):
        names = [n.get("name") for n in nodes]
        sources = [n.get("source", "") for n in nodes]
        if not all(isinstance(n, str) and n.isidentifier() for n in names) or len(set(names)) != len(names):
            names = None
        if not all(isinstance(s, str) for s in sources):
            sources = None
    try:
        graph = decode(memories, names, sources)
        graph.verify()
    except ImageError:
        raise
    except SnnCompileError as e:
        raise ImageError(f"the image does not describe a valid network: {e}") from None
    check_words(memories, graph)
    target, compiler = manifest.get("target"), manifest.get("compiler")
    _expect(
        isinstance(target, str) and isinstance(compiler, str),
        "manifest: 'target' and 'compiler' must be strings",
    )
    want = _files(graph, target, memories, compiler)
    try:
        header = (root / "image.h").read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {str(root / 'image.h')!r}: {e.strerror}") from None
    if header != want["image.h"]:
        _first_line_difference("image.h", header, want["image.h"], "the verified memories")
    difference = _diff(manifest, json.loads(want["manifest.json"]), "manifest.json")
    _expect(difference is None, f"{difference} (the verified memories and node names give that)")
    return Image(graph, memories, manifest)
