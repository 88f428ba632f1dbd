"""The weight-memory image backend: layout (graph <-> memories), memory formats, image directories."""

from snncompile.backends.image.files import image_files, read_image, write_image
from snncompile.backends.image.layout import decode, encode
from snncompile.backends.image.memory import Field, ImageError, MemoryImage

__all__ = [
    "Field",
    "ImageError",
    "MemoryImage",
    "decode",
    "encode",
    "image_files",
    "read_image",
    "write_image",
]
