"""The weight-memory image backend: layout (graph <-> memories), memory formats, image directories."""

from snncompile.backends.image.files import Image, image_files, load_image, read_image, write_image
from snncompile.backends.image.layout import check_words, decode, encode
from snncompile.backends.image.memory import Field, ImageError, MemoryImage

__all__ = [
    "Field",
    "Image",
    "ImageError",
    "MemoryImage",
    "check_words",
    "decode",
    "encode",
    "image_files",
    "load_image",
    "read_image",
    "write_image",
]
