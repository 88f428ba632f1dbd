"""Image directories: every memory in every format, a C header and ``manifest.json``; and the reader.

The manifest records, per memory, its width, depth, base address (byte address in one flat map,
4 KiB aligned), field packing, signedness, source and the sha256 of each file, plus the image format
version, the compiler version, the target and the node names. Output is deterministic: the same graph
and target give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from snncompile.backends.image.layout import (
    LOGICAL,
    NEURON_FIELDS,
    RECORD,
    RECORD_FIELDS,
    VERSION,
    decode,
    encode,
)
from snncompile.backends.image.memory import Field, ImageError, MemoryImage

from snncompile._version import __version__
from snncompile.errors import SnnCompileError
from snncompile.ir import Graph
from snncompile.loading import write_atomic
from snncompile.targets import Target

FORMAT = "snncompile.image"
FORMATS = ("mem", "coe", "mif", "bin")
_ALIGN = 4096


def _header(memories: dict[str, MemoryImage], target: Target) -> str:
    lines = [
        "/* snncompile weight-memory image — generated, do not edit. */",
        "#ifndef SNNCOMPILE_IMAGE_H",
        "#define SNNCOMPILE_IMAGE_H",
        "#include <stdint.h>",
        f"#define SNN_TARGET {json.dumps(target.name, ensure_ascii=True)}",
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
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    address = 0
    for name, m in memories.items():
        blobs = {"mem": m.to_mem(), "coe": m.to_coe(), "mif": m.to_mif(), "bin": m.to_bin()}
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
        "compiler": f"snncompile {__version__}",
        "target": target.name,
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
    ext = "bin" if "bin" in files else "mem"
    _expect(ext in files and ext in sums, f"manifest: memory {name!r} names neither a .bin nor a .mem file")
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
    _expect(
        hashlib.sha256(data).hexdigest() == sums[ext],
        f"memory {name!r}: {filename} does not match its sha256 (corrupt or edited)",
    )
    if ext == "bin":
        return MemoryImage.from_bin(name, width, depth, data, fields, entry.get("source", ""))
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ImageError(f"memory {name!r}: {filename} is not ASCII text") from None
    return MemoryImage.from_mem(name, width, depth, text, fields, entry.get("source", ""))


def read_image(directory: str | os.PathLike[str]) -> Graph:
    """The fixed-point graph of an image directory; any malformed input is an :class:`ImageError`."""
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
    return graph
