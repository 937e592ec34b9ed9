"""The image side of a vision-language export: an image's place in the prompt, its encoding, its embeddings.

Preprocessing (`inference/image_preprocess.py`) follows the processor config the export recorded, without
torch. An image is one frame, or, when the export splits images (Idefics3), its tiles row by row and then
the whole image: each frame's image tokens sit after their own markers, laid out as the processor lays them
out (`ImageTiling`). Each image is encoded once, all its frames in one run; each frame's features replace the
embeddings of its image-token positions.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.errors import HF_INVALID_IMAGE, HF_MODEL_LOAD_FAILED, InferenceError
from inference.image_preprocess import decode_image, max_tiles_per_side, open_image, preprocess, tile_grid
from inference.manifest import Vision

Grid = tuple[int, int]  # (rows, columns) of tiles; (0, 0) for an image that is not split


@dataclass(frozen=True)
class PromptImages:
    """A prompt with its images expanded: the token ids, and each frame's first image-token position (an
    image's tiles row by row, then the whole image; one frame for an image that is not split)."""

    token_ids: list[int]
    starts: list[int]


def image_grids(images: Sequence[bytes], spec: Vision) -> list[Grid]:
    """Each image's tile grid, from its size alone (the pixels are not decoded)."""
    if not spec.preprocessing.do_image_splitting:
        return [(0, 0)] * len(images)
    return [tile_grid(*open_image(data).size, spec.preprocessing) for data in images]


def image_layout(spec: Vision, grid: Grid) -> tuple[list[int], list[int]]:
    """One image's ids in the prompt, and the offset of each frame's image tokens among them."""
    ids: list[int] = []
    offsets: list[int] = []
    rows, cols = grid
    if rows or cols:
        tiling = spec.tiling
        if tiling is None or rows > len(tiling.tile_prefix_ids) or cols > len(tiling.tile_prefix_ids[0]):
            raise InferenceError(HF_INVALID_IMAGE, f"this export cannot lay out {rows}x{cols} tiles of an image")
        for row in range(rows):
            for col in range(cols):
                ids.extend(tiling.tile_prefix_ids[row][col])
                offsets.append(len(ids))
                ids.extend([spec.image_token_id] * spec.tokens_per_image)
            ids.extend(tiling.row_end_ids if row + 1 < rows else tiling.last_row_end_ids)
    ids.extend(spec.image_prefix_ids)
    offsets.append(len(ids))
    ids.extend([spec.image_token_id] * spec.tokens_per_image)
    ids.extend(spec.image_suffix_ids)
    return ids, offsets


def max_image_tokens(spec: Vision) -> int:
    """What the largest image costs the context: its tokens with the markers around them."""
    side = max_tiles_per_side(spec.preprocessing) if spec.tiling is not None else 0
    return len(image_layout(spec, (side, side))[0])


def expand_images(prompt_ids: Sequence[int], spec: Vision, grids: Sequence[Grid]) -> PromptImages:
    """Replace each image token the template wrote by the image's layout for its grid (`image_grids`)."""
    found = sum(1 for token in prompt_ids if token == spec.image_token_id)
    if found != len(grids):
        raise InferenceError(
            HF_INVALID_IMAGE, f"the prompt has {found} image places for {len(grids)} images", {"images": len(grids)}
        )
    ids: list[int] = []
    starts: list[int] = []
    images = iter(grids)
    for token in prompt_ids:
        if token != spec.image_token_id:
            ids.append(token)
            continue
        layout, offsets = image_layout(spec, next(images))
        starts.extend(len(ids) + offset for offset in offsets)
        ids.extend(layout)
    return PromptImages(ids, starts)


FEATURE_CACHE_BYTES = 64 << 20  # the newest images' features kept per export (SmolVLM's split image: 2 MB)


class VisionEncoder:
    """The vision graph and the embedding table of one export, opened beside its decoder.

    The features of the images encoded last are kept (least recently used out, FEATURE_CACHE_BYTES), because a
    conversation sends its earlier turns' images again on every turn and encoding dominates an image's cost.
    """

    def __init__(self, folder: Path, spec: Vision, session_options: ort.SessionOptions, providers: list) -> None:
        self.spec = spec
        self._cache: OrderedDict[bytes, list[np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
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
        """Each frame's features, float32 [tokens_per_image, hidden] (read-only), in prompt order
        (`PromptImages.starts`); one encoder run per image not encoded lately, its frames batched."""
        features: list[np.ndarray] = []
        for data in images:
            features.extend(self._image_features(data))
        return features

    def _image_features(self, data: bytes) -> list[np.ndarray]:
        key = hashlib.sha256(data).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        pixels = preprocess(decode_image(data), self.spec.preprocessing)
        output = self.session.run(None, {self.input_name: pixels})[0]
        frames = [np.asarray(frame, dtype=np.float32) for frame in output]
        for frame in frames:
            frame.setflags(write=False)
        size = sum(frame.nbytes for frame in frames)
        with self._lock:
            if key not in self._cache and size <= FEATURE_CACHE_BYTES:
                self._cache[key] = frames
                self._cached_bytes += size
                while self._cached_bytes > FEATURE_CACHE_BYTES:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached_bytes -= sum(frame.nbytes for frame in dropped)
        return frames


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
