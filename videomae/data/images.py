"""Still images: which paths are images, and decoding one to RGB.

A manifest row whose path ends in one of :data:`IMAGE_EXTENSIONS` (any case) is a still image, read as a clip of
one frame (:class:`videomae.data.readers.ImageReader`); the frames of a frame folder are decoded the same way.
Decoding goes through ``torchvision.io.decode_image`` (libjpeg-turbo, libpng, libwebp) and falls back to PIL only
for what torchvision cannot read (BMP, CMYK JPEGs and other oddities). EXIF orientation is not applied, as in
torchvision's and PIL's defaults (and ImageNet's usual loaders).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "decode_image_file", "is_image_path"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp")
"""File extensions (lower case, no dot) of still images, in manifests, frame folders and ``manifest build``."""
_SUFFIXES = tuple(f".{e}" for e in IMAGE_EXTENSIONS)


class ImageDecodeError(ValueError):
    """Neither torchvision nor PIL could decode an image file."""


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a still image by its extension (case-insensitive); folders are never images."""
    return os.fspath(path).lower().endswith(_SUFFIXES)


def decode_image_file(file: str | os.PathLike) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` RGB (alpha dropped, grey and palettes expanded, 16-bit scaled).

    Raises:
        ImageDecodeError: the file is unreadable, truncated or no image.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    file = os.fspath(file)
    try:
        image = decode_image(read_file(file), mode=ImageReadMode.RGB)  # (3, H, W)
        if image.dtype != torch.uint8:  # 16-bit PNGs
            from torchvision.transforms.v2.functional import to_dtype

            image = to_dtype(image, torch.uint8, scale=True)
        return image.permute(1, 2, 0).numpy()
    except (RuntimeError, OSError, ValueError):  # formats torchvision does not decode (BMP, CMYK JPEG, ...)
        pass
    from PIL import Image

    try:
        with Image.open(file) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        text = str(e).strip().splitlines()
        raise ImageDecodeError(text[-1] if text else type(e).__name__) from e
