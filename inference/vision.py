"""The image side of a vision-language export: decode, preprocess (Pillow and numpy), encode, place in the prompt.

Preprocessing follows the processor config the export recorded (`ImagePreprocessing`), without torch: the
same Pillow resizes the Hugging Face processor makes, then rescale and per-channel normalization. Only the
no-split path is supported: an export whose processor splits images into tiles is refused at export time.
Each image is encoded once; its features replace the embeddings of its image-token positions.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.errors import HF_INVALID_IMAGE, HF_MODEL_LOAD_FAILED, InferenceError
from inference.manifest import ImagePreprocessing, Vision

MAX_IMAGE_PIXELS = 40_000_000  # bigger images are refused before they are decoded (memory)


@dataclass(frozen=True)
class PromptImages:
    """A prompt with its images expanded: the token ids, and each image's first image-token position."""

    token_ids: list[int]
    starts: list[int]


def decode_image(data: bytes):  # -> PIL.Image.Image
    """The image in `data` as RGB; HF_INVALID_IMAGE for bytes that are not a readable picture or are too large."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InferenceError(
                    HF_INVALID_IMAGE,
                    f"the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} pixels are accepted",
                    {"width": width, "height": height},
                )
            image.load()
    except InferenceError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image cannot be read ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise InferenceError(HF_INVALID_IMAGE, f"the image is too large ({exc})") from exc
    return image.convert("RGB")


def preprocess(image, spec: ImagePreprocessing) -> np.ndarray:  # image: PIL.Image.Image
    """float32 [3, size, size], as the processor computes `pixel_values` for one image without splitting."""
    if spec.do_image_splitting:
        raise InferenceError(HF_INVALID_IMAGE, "this export splits images into tiles, which the engine cannot do yet")
    if spec.longest_edge is not None:
        image = image.resize(_keep_aspect(image.height, image.width, spec.longest_edge)[::-1], resample=spec.resample)
    if spec.shortest_edge is not None:
        image = _centre_crop(image.resize(_short_side(image, spec.shortest_edge), resample=spec.resample), spec.size)
    else:
        image = image.resize((spec.size, spec.size), resample=spec.resample)
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


def _keep_aspect(height: int, width: int, longest: int) -> tuple[int, int]:
    """Idefics3's first resize: the longest edge to `longest`, the other in proportion and rounded up to even."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def expand_images(prompt_ids: Sequence[int], spec: Vision, images: int) -> PromptImages:
    """Replace each image token the template wrote by the image's prefix, its tokens, and its suffix."""
    found = sum(1 for token in prompt_ids if token == spec.image_token_id)
    if found != images:
        raise InferenceError(
            HF_INVALID_IMAGE, f"the prompt has {found} image places for {images} images", {"images": images}
        )
    ids: list[int] = []
    starts: list[int] = []
    for token in prompt_ids:
        if token != spec.image_token_id:
            ids.append(token)
            continue
        ids.extend(spec.image_prefix_ids)
        starts.append(len(ids))
        ids.extend([spec.image_token_id] * spec.tokens_per_image)
        ids.extend(spec.image_suffix_ids)
    return PromptImages(ids, starts)


class VisionEncoder:
    """The vision graph and the embedding table of one export, opened beside its decoder."""

    def __init__(self, folder: Path, spec: Vision, session_options: ort.SessionOptions, providers: list) -> None:
        self.spec = spec
        try:
            self.session = ort.InferenceSession(str(folder / spec.encoder_file), session_options, providers=providers)
            self.table = np.load(folder / spec.embed_file, mmap_mode="r")
        except Exception as exc:
            raise InferenceError(
                HF_MODEL_LOAD_FAILED, f"cannot load the vision side of {folder}: {exc}", {"path": str(folder)}
            ) from exc
        self.input_name = self.session.get_inputs()[0].name

    def embed(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [len(token_ids), hidden]: the decoder's embeddings of these tokens."""
        return np.asarray(self.table[np.asarray(token_ids, dtype=np.int64)], dtype=np.float32)

    def encode(self, images: Sequence[bytes]) -> list[np.ndarray]:
        """Each image's features, float32 [tokens_per_image, hidden]; one encoder run per image."""
        features = []
        for data in images:
            pixels = preprocess(decode_image(data), self.spec.preprocessing)[None]
            output = self.session.run(None, {self.input_name: pixels})[0]
            features.append(np.asarray(output[0], dtype=np.float32))
        return features


@dataclass
class ImageEmbeds:
    """The image features of one prompt by position: what the decoder reads instead of the token embeddings."""

    starts: list[int]
    features: list[np.ndarray]

    def overrides(self, first: int, count: int) -> list[tuple[int, np.ndarray]]:
        """(offset in the step, rows) for the image positions in [first, first + count)."""
        found = []
        for start, rows in zip(self.starts, self.features, strict=True):
            low, high = max(first, start), min(first + count, start + len(rows))
            if low < high:
                found.append((low - first, rows[low - start : high - start]))
        return found
