"""Vision-language exports: the vision encoder with its connector, the embedding table, and the text decoder.

The decoder goes through Optimum's export API with a custom config that feeds `inputs_embeds` with the KV
cache (exports/vision_configs.py), then the same decoding rewrites, quantization or float16 conversion as
text models. The vision encoder is exported by exports/vision_encoder.py. The export is validated the way
serving runs it (exports/vision_validation.py): the engine's own preprocessing, encoder and decoder on fixed
synthetic images, against PyTorch's processor and model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from msgspec import structs

from exports import errors
from exports.architectures import VISION_MODEL_TYPES
from exports.conversion import _quiet
from exports.errors import ExportError
from exports.facts import file_entries, has_chat_template, now_iso, tool_versions
from exports.float16 import KV_CACHE_DTYPE, to_float16_in_place
from exports.manifest import MANIFEST_NAME, Capabilities, Dtype, Manifest, Source, Validation, write_manifest
from exports.optimize import optimize_for_decoding
from exports.ort_runner import EMBED_TABLE
from exports.progress import ExportProgress
from exports.quantize import QuantizeMode, graph_bytes, is_large, quantize_in_place
from exports.sources import ResolvedSource
from exports.validation import (
    NEW_TOKENS,
    Comparison,
    Thresholds,
    require_agreement,
    require_logit_diff,
    validation_record,
)
from exports.vision_encoder import ENCODER_FILE, encoder_target, export_encoder, try_converted_encoder
from exports.vision_loading import LoadedVision, load_vision
from exports.vision_validation import SYNTHETIC_IMAGES, compare_vision, torch_references
from inference.image_preprocess import max_tiles_per_side
from inference.manifest import ImagePreprocessing, ImageTiling, Vision
from inference.vision import image_layout

DECODER_FILE = "model.onnx"
EMBED_FILE = EMBED_TABLE


def is_vision_model_type(model_type: str | None) -> bool:
    return model_type in VISION_MODEL_TYPES


def vision_spec(loaded: LoadedVision) -> Vision:
    """The image's place in the prompt and its preprocessing, from the processor."""
    if loaded.model_type == "llava":
        return _llava_spec(loaded)
    return _idefics3_spec(loaded)


def _llava_spec(loaded: LoadedVision) -> Vision:
    """LLaVA: `<image>` repeated once per patch (the class token dropped by the `default` strategy), CLIP's
    shortest-edge resize and centre crop."""
    processor, image_processor, config = loaded.processor, loaded.processor.image_processor, loaded.model.config
    if config.vision_feature_select_strategy not in ("default", "full"):
        raise ExportError(
            errors.UNSUPPORTED_ARCHITECTURE,
            f"vision_feature_select_strategy {config.vision_feature_select_strategy!r} is not supported",
        )
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    tokens = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
    crop = image_processor.crop_size
    if not getattr(image_processor, "do_center_crop", False) or crop["height"] != crop["width"]:
        raise ExportError(errors.UNSUPPORTED_ARCHITECTURE, "only a square centre crop is supported for LLaVA")
    return Vision(
        encoder_file=ENCODER_FILE,
        embed_file=EMBED_FILE,
        image_token=processor.image_token,
        image_token_id=int(config.image_token_index),
        tokens_per_image=tokens,
        image_prefix_ids=[],
        image_suffix_ids=[],
        preprocessing=ImagePreprocessing(
            size=int(crop["height"]),
            resample=int(image_processor.resample),
            rescale_factor=float(image_processor.rescale_factor),
            mean=[float(v) for v in image_processor.image_mean],
            std=[float(v) for v in image_processor.image_std],
            shortest_edge=int(image_processor.size["shortest_edge"]),
        ),
    )


def _idefics3_spec(loaded: LoadedVision) -> Vision:
    """Idefics3 / SmolVLM: the whole image's tokens between <fake_token_around_image><global-img> and
    <fake_token_around_image>; with image splitting, each tile's tokens before them, after its own
    <fake_token_around_image><row_r_col_c>, each row ended by a newline."""
    processor, image_processor = loaded.processor, loaded.processor.image_processor
    tokenizer = processor.tokenizer
    splitting = bool(getattr(image_processor, "do_image_splitting", False))
    size = int(image_processor.max_image_size["longest_edge"])
    config = loaded.model.config
    preprocessing = ImagePreprocessing(
        size=size,
        resample=int(image_processor.resample),
        rescale_factor=float(image_processor.rescale_factor),
        mean=[float(v) for v in image_processor.image_mean],
        std=[float(v) for v in image_processor.image_std],
        longest_edge=int(image_processor.size["longest_edge"]),
        do_image_splitting=splitting,
    )
    spec = Vision(
        encoder_file=ENCODER_FILE,
        embed_file=EMBED_FILE,
        image_token=processor.image_token,
        image_token_id=int(config.image_token_id),
        tokens_per_image=int(processor.image_seq_len),
        image_prefix_ids=[
            tokenizer.convert_tokens_to_ids(processor.fake_image_token),
            tokenizer.convert_tokens_to_ids(processor.global_image_tag),
        ],
        image_suffix_ids=[tokenizer.convert_tokens_to_ids(processor.fake_image_token)],
        preprocessing=preprocessing,
        tiling=_idefics3_tiling(processor, max_tiles_per_side(preprocessing)) if splitting else None,
    )
    _check_idefics3_layout(processor, spec)
    return spec


def _idefics3_tiling(processor: Any, side: int) -> ImageTiling:
    """The ids of the processor's text around the tiles, for grids up to `side` x `side`."""

    def ids(text: str) -> list[int]:
        return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    fake = processor.fake_image_token
    return ImageTiling(
        tile_prefix_ids=[[ids(f"{fake}<row_{r + 1}_col_{c + 1}>") for c in range(side)] for r in range(side)],
        row_end_ids=ids("\n"),
        last_row_end_ids=ids("\n\n"),
    )


def _check_idefics3_layout(processor: Any, spec: Vision) -> None:
    """Every grid the engine can lay out gives the ids of the processor's own text for it: the tokenizer
    splits that text at its special tokens, which the recorded pieces assume."""
    from transformers.models.idefics3.processing_idefics3 import get_image_prompt_string

    side = max_tiles_per_side(spec.preprocessing) if spec.tiling is not None else 0
    grids = [(0, 0)] + [(rows, cols) for rows in range(1, side + 1) for cols in range(1, side + 1)]
    for rows, cols in grids:
        text = get_image_prompt_string(
            rows,
            cols,
            spec.tokens_per_image,
            fake_token_around_image=processor.fake_image_token,
            image_token=processor.image_token,
            global_img_token=processor.global_image_tag,
        )
        if processor.tokenizer(text, add_special_tokens=False)["input_ids"] != image_layout(spec, (rows, cols))[0]:
            raise ExportError(
                errors.UNSUPPORTED_ARCHITECTURE,
                f"the tokenizer does not split the processor's image text ({rows}x{cols} tiles) at its image "
                "tokens, so the engine cannot lay out the image as the processor does",
            )


def export_vision(
    resolved: ResolvedSource,
    alias: str,
    staging: Path,
    progress: ExportProgress,
    started: float,
    *,
    mode: QuantizeMode = "none",
    precision: Dtype = "fp32",
    thresholds: Thresholds,
) -> Manifest:
    """Load, convert, validate and describe the vision-language model at `resolved` inside `staging`.

    A quantized or float16 export converts the decoder as a text export does and validates it; it then tries
    the vision encoder converted too (int8, or float16) and keeps it only if the whole image path agrees with
    PyTorch on at least as many greedy tokens as with the float32 encoder (and, for float16, stays within
    the float16 logit bound); the manifest records which encoder was kept and the figures of the try.
    """
    assert resolved.path is not None
    progress.start("load", "Loading the PyTorch vision-language model and its processor")
    loaded = load_vision(resolved.path)
    progress.finish("load", f"{loaded.model_type}, {_parameters(loaded.model) / 1e6:.1f}M parameters")
    spec = vision_spec(loaded)
    text_config = loaded.model.config.text_config
    eos_ids = _eos_ids(loaded)

    progress.start("convert", "Exporting the decoder (inputs_embeds, past key values) with Optimum")
    decoder = _export_decoder(loaded, staging, eos_ids)
    steps = optimize_for_decoding(decoder, text_config, large=is_large(decoder), pack=mode != "int8")
    progress.finish("convert", f"{decoder.name}, {graph_bytes(decoder) / 1e6:.1f} MB; {', '.join(steps)}")

    progress.start("convert-vision", "Exporting the vision encoder and connector, and the embedding table")
    export_encoder(loaded, staging / ENCODER_FILE, spec.preprocessing.size)
    np.save(staging / EMBED_FILE, _text_model(loaded).get_input_embeddings().weight.detach().float().numpy())
    progress.finish("convert-vision", ENCODER_FILE)

    manifest = Manifest(
        alias=alias,
        source=Source(resolved.kind, resolved.value, resolved.sha256),
        architecture=str((loaded.model.config.architectures or [type(loaded.model).__name__])[0]),
        model_type=loaded.model_type,
        parameter_count=_parameters(loaded.model),
        context_length=int(getattr(text_config, "max_position_embeddings", 2048)),
        eos_token_ids=eos_ids,
        chat_template=has_chat_template(staging),
        capabilities=Capabilities(text=True, vision=True),
        quantization="none",
        onnx_file=DECODER_FILE,
        files=[],
        validation=Validation(
            prompts=0, max_abs_logit_diff=0.0, max_logit_diff_threshold=thresholds.max_logit_diff, passed=False
        ),
        versions=tool_versions(),
        created_at=now_iso(),
        graph_rewrites=list(steps),
        vision=spec,
    )
    references = torch_references(loaded, progress)
    del loaded  # PyTorch is done: its answers are the references

    def check(step: str, description: str, manifest: Manifest) -> Comparison:
        write_manifest(staging, manifest)  # the engine reads it; rewritten with the figures at the end
        progress.start(step, description)
        result = compare_vision(staging, references)
        progress.finish(
            step, f"max |logit diff| {result.max_abs_logit_diff:.2e}, greedy agreement {result.top1_agreement:.0%}"
        )
        return result

    base = check("validate", "Validating the engine against PyTorch on synthetic images", manifest)
    require_logit_diff(base, thresholds.max_logit_diff)
    final = base
    if mode != "none":
        decoder = quantize_in_place(decoder, mode, progress)
        manifest = structs.replace(manifest, quantization=mode, onnx_file=decoder.name)
        final = check("validate-quantized", f"Validating the {mode} decoder against PyTorch", manifest)
        require_agreement(final, mode, thresholds.min_agreement)
    if precision == "fp16":
        decoder, steps = to_float16_in_place(decoder, steps, progress)
        manifest = structs.replace(manifest, dtype="fp16", kv_cache_dtype=KV_CACHE_DTYPE, graph_rewrites=list(steps))
        final = check("validate-fp16", "Validating the float16 decoder against PyTorch", manifest)
        require_logit_diff(final, thresholds.max_float16_logit_diff, "float16 ")
        require_agreement(final, "float16", thresholds.min_agreement)

    tried: list[Comparison] = []
    float_encoder = final
    target = encoder_target(mode, precision)
    if target != "fp32":
        converted = structs.replace(manifest, vision=structs.replace(spec, encoder_precision=target))

        def holds() -> bool:
            tried.append(check("validate-encoder", f"Validating with a {target} vision encoder", converted))
            bound = thresholds.max_float16_logit_diff if precision == "fp16" else float("inf")
            return tried[-1].top1_agreement >= final.top1_agreement and tried[-1].max_abs_logit_diff <= bound

        if try_converted_encoder(staging / ENCODER_FILE, target, holds):
            manifest, final = converted, tried[-1]

    manifest = structs.replace(
        manifest,
        validation=_validation(base, final, (float_encoder, tried[-1]) if tried else None, mode, precision, thresholds),
        export_seconds=round(time.monotonic() - started, 1),
    )
    (staging / MANIFEST_NAME).unlink()
    manifest = structs.replace(manifest, files=file_entries(staging))
    write_manifest(staging, manifest)
    return manifest


def _validation(
    base: Comparison,
    final: Comparison,
    encoders: tuple[Comparison, Comparison] | None,
    mode: QuantizeMode,
    precision: Dtype,
    thresholds: Thresholds,
) -> Validation:
    """The figures of the float32 export (`base`), of the export as kept (`final`), and of the converted
    decoder with the float32 encoder and with the converted one (`encoders`), whichever was kept."""
    figures = validation_record(
        base,
        final,
        mode != "none",
        precision == "fp16",
        thresholds,
        prompts=len(SYNTHETIC_IMAGES),
        decode_steps=NEW_TOKENS,
    )
    if encoders is None:
        return figures
    return structs.replace(
        figures,
        float_encoder_top1_agreement=encoders[0].top1_agreement,
        float_encoder_max_abs_logit_diff=encoders[0].max_abs_logit_diff,
        converted_encoder_top1_agreement=encoders[1].top1_agreement,
        converted_encoder_max_abs_logit_diff=encoders[1].max_abs_logit_diff,
    )


def _text_model(loaded: LoadedVision) -> Any:
    if loaded.model_type == "llava":
        return loaded.model.model.language_model
    return loaded.model.model.text_model


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _eos_ids(loaded: LoadedVision) -> list[int]:
    ids: list[int] = []
    for source in (loaded.model.generation_config.eos_token_id, loaded.model.config.text_config.eos_token_id):
        for value in source if isinstance(source, list) else [source]:
            if isinstance(value, int) and value not in ids:
                ids.append(value)
    end = loaded.processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    if isinstance(end, int) and end != loaded.processor.tokenizer.unk_token_id and end not in ids:
        ids.append(end)  # SmolVLM's turns end with it
    if not ids:
        raise ExportError(errors.NOT_A_MODEL, "the model names no end-of-sequence token")
    return ids


def _export_decoder(loaded: LoadedVision, output: Path, eos_ids: list[int]) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers import AutoModelForCausalLM

    from exports.vision_configs import embeds_decoder_config

    text_config = loaded.model.config.text_config
    decoder = AutoModelForCausalLM.from_config(text_config).eval()
    decoder.model = _text_model(loaded)
    decoder.lm_head = loaded.model.lm_head
    decoder.generation_config = loaded.model.generation_config
    decoder.generation_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else list(eos_ids)
    loaded.processor.save_pretrained(output)
    decoder.config._name_or_path = str(output)
    try:
        with _quiet():
            onnx_export_from_model(
                decoder,
                output,
                task="text-generation-with-past",
                custom_onnx_configs={"model": embeds_decoder_config(text_config)},
                do_validation=False,
                device="cpu",
                no_post_process=True,
            )
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"Optimum could not export the decoder ({type(exc).__name__}: {exc})."
        ) from exc
    return output / DECODER_FILE
