"""`manifest.json`: what an export folder holds, written by `beth-chat export` and read by serving.

The manifest is written last, inside the temporary build folder, so a folder that has one was exported
completely. Serving trusts it for the model's facts (context length, stop tokens, which graph to open) and
lists the models from it without loading anything; exports/ writes it with this same schema.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from inference.errors import HF_MODEL_LOAD_FAILED, InferenceError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

Quantization = Literal["none", "int8", "int4"]
Dtype = Literal["fp32", "fp16"]
SourceKind = Literal["folder", "gguf", "hub", "default"]
EncoderPrecision = Literal["fp32", "fp16", "int8"]

log = logging.getLogger(__name__)


class Capabilities(msgspec.Struct, frozen=True):
    text: bool = True
    vision: bool = False


class ImagePreprocessing(msgspec.Struct, frozen=True):
    """How an image becomes the vision encoder's `pixel_values`, from the processor's config.

    `longest_edge`: a first resize keeping the aspect ratio (Idefics3), or None; then a resize to the encoder's
    square `size` (or, with `shortest_edge`, a resize of the shortest edge and a centre crop; or, with
    `do_image_splitting`, a resize to whole `size` tiles, the tiles, and the whole image as one square); then
    rescale and normalize per channel. `resample` is Pillow's filter number.
    """

    size: int
    resample: int
    rescale_factor: float
    mean: list[float]
    std: list[float]
    longest_edge: int | None = None
    do_image_splitting: bool = False
    # CLIP-style (LLaVA): the shortest edge resized to `shortest_edge` keeping the aspect ratio, then the
    # centre `size` x `size` cropped, instead of a resize to the square
    shortest_edge: int | None = None


class ImageTiling(msgspec.Struct, frozen=True):
    """How a split image is laid out in the prompt (Idefics3): each tile's image tokens after its own marker,
    row by row, each row ended, then the whole image's tokens between `Vision.image_prefix_ids` and
    `image_suffix_ids`. The ids are the tokenizer's for the processor's text, so they match it exactly."""

    tile_prefix_ids: list[list[list[int]]]  # [row][column]: <fake_token_around_image><row_r_col_c>
    row_end_ids: list[int]  # after each row of tiles but the last ("\n")
    last_row_end_ids: list[int]  # after the last row, before the whole image ("\n\n")


class Vision(msgspec.Struct, frozen=True):
    """The image side of a vision-language export: graphs, the image's place in the prompt, preprocessing."""

    encoder_file: str  # pixel_values [images, 3, size, size] -> image_features [images, tokens, hidden]
    embed_file: str  # the decoder's token embedding table, float32 [vocab, hidden] (.npy)
    image_token: str  # what the chat template writes for one image
    image_token_id: int
    tokens_per_image: int
    image_prefix_ids: list[int]  # written before an image's tokens (Idefics3: <fake_token_around_image><global-img>)
    image_suffix_ids: list[int]
    preprocessing: ImagePreprocessing
    tiling: ImageTiling | None = None  # exports whose processor splits images into tiles
    # the encoder graph's weights: float32 unless a quantized or float16 export converted it too and the whole
    # image path still agreed with PyTorch (`Validation.converted_encoder_*`); its input and output stay float32
    encoder_precision: EncoderPrecision = "fp32"


class FileEntry(msgspec.Struct, frozen=True):
    name: str
    size: int
    sha256: str


class Validation(msgspec.Struct, frozen=True):
    """Figures measured at export time; the thresholds they were held to are kept beside them."""

    prompts: int
    max_abs_logit_diff: float
    max_logit_diff_threshold: float
    passed: bool
    decode_steps: int = 0
    top1_agreement: float | None = None
    min_agreement_threshold: float | None = None
    compared_tokens: int = 0
    quantized_max_abs_logit_diff: float | None = None
    # an fp16 export: the float16 graph's figures (top1_agreement and compared_tokens are then the float16
    # graph's; max_abs_logit_diff stays the float32 graph's, checked before the conversion)
    float16_max_abs_logit_diff: float | None = None
    float16_max_logit_diff_threshold: float | None = None
    # a quantized or float16 vision-language export: the image path's figures with the float32 vision encoder and
    # with the encoder converted too (int8, or float16); the converted one is kept (`Vision.encoder_precision`)
    # only when its greedy agreement is no lower (and, for float16, its logit difference within the bound)
    float_encoder_top1_agreement: float | None = None
    float_encoder_max_abs_logit_diff: float | None = None
    converted_encoder_top1_agreement: float | None = None
    converted_encoder_max_abs_logit_diff: float | None = None


class Versions(msgspec.Struct, frozen=True):
    transformers: str
    optimum: str
    onnxruntime: str
    torch: str
    onnx: str = ""


class Source(msgspec.Struct, frozen=True):
    kind: SourceKind
    value: str
    sha256: str | None = None


class Manifest(msgspec.Struct, frozen=True):
    """Everything serving and `models list` need to know about one export folder."""

    alias: str
    source: Source
    architecture: str
    model_type: str
    parameter_count: int
    context_length: int
    eos_token_ids: list[int]
    chat_template: bool
    capabilities: Capabilities
    quantization: Quantization
    onnx_file: str
    files: list[FileEntry]
    validation: Validation
    versions: Versions
    created_at: str
    export_seconds: float = 0.0
    graph_rewrites: list[str] = []  # exports/optimize.py's steps; the engine drafts only on some of them
    format_version: int = FORMAT_VERSION
    # precision of weights and activations, and the numpy element types of the `past_key_values.*`/`present.*`
    # cache tensors and of `logits` that a client allocates and reads
    dtype: Dtype = "fp32"
    kv_cache_dtype: str = "float32"
    logits_dtype: str = "float32"
    vision: Vision | None = None  # vision-language exports only

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of every file the export consists of."""
        return sum(entry.size for entry in self.files)


@dataclass(frozen=True)
class BrokenExport:
    """A folder under the models directory that is not a usable export, and why."""

    path: Path
    reason: str


def read_manifest(model_dir: Path) -> Manifest:
    """Read and type-check `<model_dir>/manifest.json`; raise InferenceError(HF_MODEL_LOAD_FAILED) if unusable."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InferenceError(
            HF_MODEL_LOAD_FAILED, f"{path}: cannot read the manifest ({exc.strerror}).", {"path": str(path)}
        ) from exc
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise InferenceError(
            HF_MODEL_LOAD_FAILED, f"{path}: not a valid export manifest ({exc}).", {"path": str(path)}
        ) from exc


def scan_manifests(models_dir: Path) -> tuple[list[Manifest], list[BrokenExport]]:
    """Every export under `models_dir` (sorted by alias) and every folder that is not one.

    Hidden folders (the `.<alias>.tmp-*` build folders of an export in progress) are skipped silently.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return [], []
    manifests: list[Manifest] = []
    broken: list[BrokenExport] = []
    for child in sorted(models_dir.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            manifest = read_manifest(child)
        except InferenceError as exc:
            broken.append(BrokenExport(child, exc.message))
            continue
        if manifest.alias != child.name:
            broken.append(BrokenExport(child, f"manifest alias {manifest.alias!r} differs from the folder name"))
            continue
        manifests.append(manifest)
    return manifests, broken


def list_manifests(models_dir: Path) -> list[Manifest]:
    """The usable exports under `models_dir`; broken folders are logged (one warning each) and skipped."""
    manifests, broken = scan_manifests(models_dir)
    for item in broken:
        log.warning("skipping %s: %s", item.path, item.reason)
    return manifests
