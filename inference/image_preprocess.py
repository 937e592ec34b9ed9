"""An image's bytes to the vision encoder's `pixel_values`, as the Hugging Face processor computes them, without torch.

Pillow does the same resizes the processor makes (it resizes with Pillow too), numpy the rescale and the
per-channel normalization. Idefics3 / SmolVLM's image splitting is here as well: the image, its longest edge
resized, is stretched to whole tiles of the encoder's square size and cut into them, row by row, and the whole
image follows, resized to one square (`tile_grid` says how many rows and columns an image gives, from its size
alone, so a prompt can be laid out before the pixels are decoded).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np

from inference.errors import HF_INVALID_IMAGE, InferenceError
from inference.manifest import ImagePreprocessing

MAX_IMAGE_PIXELS = 40_000_000  # bigger images are refused before they are decoded (memory)
MAX_RESIZED_EDGE = 4096  # Idefics3's processor caps the first resize's longest edge here


def open_image(data: bytes):  # -> PIL.Image.Image
    """The image in `data`, opened (its size read, its pixels not yet decoded); HF_INVALID_IMAGE for bytes
    that are not a picture or an image with too many pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image cannot be read ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image is too large ({exc})") from exc
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InferenceError(
            HF_INVALID_IMAGE,
            f"the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} pixels are accepted",
            {"width": width, "height": height},
        )
    return image


def decode_image(data: bytes):  # -> PIL.Image.Image
    """The image in `data` as RGB, or RGBA when it has transparency (which each family's processor treats in its
    own way, see `preprocess`); HF_INVALID_IMAGE for bytes that are not a readable picture or are too large."""
    from PIL import Image

    image = open_image(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image cannot be read ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image is too large ({exc})") from exc
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    return image.convert("RGBA" if transparent else "RGB")


def tile_grid(width: int, height: int, spec: ImagePreprocessing) -> tuple[int, int]:
    """(rows, columns) of tiles an image of this size is split into; (0, 0) when it is not split (no splitting,
    or an image no larger than one tile), as the processor reports it."""
    if not spec.do_image_splitting:
        return 0, 0
    height, width = _tiled_size(*_longest_edge_size(height, width, spec), spec.size)
    if height <= spec.size and width <= spec.size:
        return 0, 0
    return math.ceil(height / spec.size), math.ceil(width / spec.size)


def max_tiles_per_side(spec: ImagePreprocessing) -> int:
    """The most rows (or columns) of tiles any image gives: its longest edge is resized to exactly this many
    tiles' width, and the other edge is no longer."""
    if not spec.do_image_splitting or spec.longest_edge is None:
        return 0
    return math.ceil(min(spec.longest_edge, MAX_RESIZED_EDGE) / spec.size)


def preprocess(image, spec: ImagePreprocessing) -> np.ndarray:  # image: PIL.Image.Image
    """float32 [frames, 3, size, size]: the processor's `pixel_values` for one image. One frame unless the
    export splits images: then its tiles, row by row, then the whole image.

    Transparency as each processor treats it: CLIP's (LLaVA) drops the alpha channel before anything else;
    Idefics3's resizes and cuts the image with its alpha channel, then lays each frame on white."""
    if spec.shortest_edge is not None:
        image = image.convert("RGB")
        frames = [_centre_crop(image.resize(_short_side(image, spec.shortest_edge), resample=spec.resample), spec.size)]
    else:
        if spec.longest_edge is not None:
            image = image.resize(_longest_edge_size(image.height, image.width, spec)[::-1], resample=spec.resample)
        frames = _split(image, spec) if spec.do_image_splitting else [_square(image, spec)]
    return np.stack([_normalize(frame, spec) for frame in frames])


def _split(image, spec: ImagePreprocessing) -> list:  # PIL.Image.Image -> list[PIL.Image.Image]
    """The tiles of `image` stretched to whole tiles, row by row, then the whole image as one square."""
    tile = spec.size
    image = image.resize(_tiled_size(image.height, image.width, tile)[::-1], resample=spec.resample)
    if image.height <= tile and image.width <= tile:
        return [image]
    tiles = [
        image.crop((left, top, left + tile, top + tile))
        for top in range(0, image.height, tile)
        for left in range(0, image.width, tile)
    ]
    return [*tiles, _square(image, spec)]


def _square(image, spec: ImagePreprocessing):  # PIL.Image.Image -> PIL.Image.Image
    if image.size == (spec.size, spec.size):
        return image
    return image.resize((spec.size, spec.size), resample=spec.resample)


def _normalize(image, spec: ImagePreprocessing) -> np.ndarray:  # image: PIL.Image.Image
    """float32 [3, H, W]: laid on white if it has an alpha channel, rescaled, then normalized per channel."""
    if image.mode == "RGBA":
        from PIL import Image

        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255)), image).convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) * np.float32(spec.rescale_factor)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def _short_side(image, shortest: int) -> tuple[int, int]:  # image: PIL.Image.Image
    """(width, height) with the shortest edge at `shortest` and the other in proportion (CLIP's resize)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    other = int(shortest * long / short)
    return (shortest, other) if width <= height else (other, shortest)


def _centre_crop(image, size: int):  # PIL.Image.Image -> PIL.Image.Image
    """The centre `size` x `size` pixels (the image is at least that large after `_short_side`)."""
    top, left = (image.height - size) // 2, (image.width - size) // 2
    return image.crop((left, top, left + size, top + size))


def _longest_edge_size(height: int, width: int, spec: ImagePreprocessing) -> tuple[int, int]:
    """Idefics3's first resize, (height, width): the longest edge to `longest_edge` (the other in proportion,
    rounded up to even), then both below MAX_RESIZED_EDGE."""
    if spec.longest_edge is None:
        return height, width
    aspect = width / height
    if width >= height:
        width, height = spec.longest_edge, int(spec.longest_edge / aspect)
        height += height % 2
    else:
        height, width = spec.longest_edge, int(spec.longest_edge * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > MAX_RESIZED_EDGE:
        width, height = MAX_RESIZED_EDGE, int(MAX_RESIZED_EDGE / aspect)
    elif height > width and height > MAX_RESIZED_EDGE:
        height, width = MAX_RESIZED_EDGE, int(MAX_RESIZED_EDGE * aspect)
    return max(height, 1), max(width, 1)


def _tiled_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """Idefics3's resize for splitting, (height, width): the longest edge up to a whole number of tiles, the
    other in proportion, then up to a whole number of tiles too (at least one: a sliver of an image is one)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return max(height, tile), max(width, tile)
