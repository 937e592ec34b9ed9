"""`export_model`: one source -> one validated, manifest-carrying export folder, or an ExportError and nothing written."""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path

from exports import errors
from exports.conversion import export_onnx
from exports.default_source import DEFAULT_ALIAS
from exports.errors import ExportError
from exports.facts import (
    architecture,
    capabilities,
    context_length,
    file_entries,
    has_chat_template,
    now_iso,
    parameter_count,
    tool_versions,
)
from exports.float16 import KV_CACHE_DTYPE, LOGITS_DTYPE, to_float16_in_place
from exports.loading import TorchSourceModel, eos_token_ids, load_source, require_torch
from exports.manifest import Dtype, Manifest, Source, write_manifest
from exports.optimize import optimize_for_decoding
from exports.progress import ExportProgress, NullProgress
from exports.quantize import QuantizeMode, check_mode, graph_bytes, is_large, quantize_in_place
from exports.sources import ResolvedSource, resolve_source
from exports.staging import check_alias, check_destination, publish, staging_folder
from exports.validation import (
    DEFAULT_MAX_FLOAT16_LOGIT_DIFF,
    DEFAULT_MAX_LOGIT_DIFF,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_FLOAT16_AGREEMENT,
    PROMPTS,
    Thresholds,
    compare,
    require_agreement,
    require_logit_diff,
    torch_references,
    validation_record,
)
from exports.vision import export_vision, is_vision_model_type


def export_model(
    source: str,
    *,
    models_dir: Path,
    alias: str | None = None,
    quantize: str = "none",
    dtype: str = "fp32",
    force: bool = False,
    max_logit_diff: float | None = None,
    min_agreement: float | None = None,
    progress: ExportProgress | None = None,
) -> Manifest:
    """Export `source` into `<models_dir>/<alias>/` and return its manifest.

    Every cheap check (source, alias, options) runs before torch is imported, so refusals are quick.
    The folder appears in one rename at the very end; on any error nothing is left behind.
    `dtype` fp16 converts the graph to float16 for CUDA (exports/float16.py); `max_logit_diff` and
    `min_agreement` then bound the float16 graph, and the float32 graph it comes from is held to the
    larger of `max_logit_diff` and the float32 default.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    mode = check_mode(quantize)
    precision = check_dtype(dtype, mode)
    thresholds = _thresholds(precision, mode, max_logit_diff, min_agreement)

    progress.start("check", f"Checking {source}")
    resolved = resolve_source(source)
    alias = check_alias(alias or default_alias(resolved, mode, precision))
    destination = check_destination(Path(models_dir), alias, force=force)
    require_torch()
    progress.finish("check", f"{resolved.kind}, {resolved.model_type or 'from the hub'} -> {alias}")
    if is_vision_model_type(resolved.model_type):
        with staging_folder(destination) as staging:
            manifest = export_vision(
                resolved, alias, staging, progress, started, mode=mode, precision=precision, thresholds=thresholds
            )
            progress.start("publish", f"Moving the export into {destination}")
            publish(staging, destination, force=force)
            progress.finish("publish", str(destination))
        gc.collect()
        return manifest

    progress.start("load", "Loading the PyTorch model" + (" (dequantizing GGUF)" if resolved.is_gguf else ""))
    loaded = load_source(resolved)
    progress.finish("load", f"{loaded.model_type}, {parameter_count(loaded) / 1e6:.1f}M parameters")
    try:
        with staging_folder(destination) as staging:
            manifest = _build(loaded, resolved, alias, mode, precision, staging, thresholds, progress, started)
            progress.start("publish", f"Moving the export into {destination}")
            publish(staging, destination, force=force)
            progress.finish("publish", str(destination))
    finally:
        del loaded
        gc.collect()
    return manifest


def check_dtype(dtype: str, mode: QuantizeMode) -> Dtype:
    """fp32 or fp16; fp16 with a quantization is refused (the quantizers take float32 graphs)."""
    if dtype not in ("fp32", "fp16"):
        raise ExportError(errors.INVALID_OPTION, f"--dtype {dtype!r} is not supported: choose fp32 or fp16.")
    if dtype == "fp16" and mode != "none":
        raise ExportError(
            errors.INVALID_OPTION,
            f"--dtype fp16 cannot be combined with --quantize {mode}: the quantizers read float32 graphs. "
            "Export with --dtype fp16 for CUDA, or with --quantize for the CPU.",
        )
    return "fp16" if dtype == "fp16" else "fp32"


def _thresholds(
    precision: Dtype, mode: QuantizeMode, max_logit_diff: float | None, min_agreement: float | None
) -> Thresholds:
    if precision == "fp32":
        return Thresholds(
            _threshold("--max-logit-diff", max_logit_diff, DEFAULT_MAX_LOGIT_DIFF),
            _threshold("--min-agreement", min_agreement, DEFAULT_MIN_AGREEMENT[mode], upper=1.0),
        )
    float16_bound = _threshold("--max-logit-diff", max_logit_diff, DEFAULT_MAX_FLOAT16_LOGIT_DIFF)
    return Thresholds(
        max(DEFAULT_MAX_LOGIT_DIFF, float16_bound) if max_logit_diff is not None else DEFAULT_MAX_LOGIT_DIFF,
        _threshold("--min-agreement", min_agreement, DEFAULT_MIN_FLOAT16_AGREEMENT, upper=1.0),
        float16_bound,
    )


def _build(
    loaded: TorchSourceModel,
    resolved: ResolvedSource,
    alias: str,
    mode: QuantizeMode,
    precision: Dtype,
    staging: Path,
    thresholds: Thresholds,
    progress: ExportProgress,
    started: float,
) -> Manifest:
    """Convert, validate, quantize and describe the model inside `staging`; raise on any refusal."""
    eos_ids = eos_token_ids(loaded)
    graph, rewrites = _convert(loaded, staging, eos_ids, progress, pack=mode != "int8")
    references = torch_references(loaded, progress)
    base = compare(graph, references, progress, "validate", "Validating ONNX against PyTorch")
    require_logit_diff(base, thresholds.max_logit_diff)
    final = base
    if mode != "none":
        graph = quantize_in_place(graph, mode, progress)
        final = compare(graph, references, progress, "validate-quantized", f"Validating {mode} against PyTorch")
        require_agreement(final, mode, thresholds.min_agreement)
    if precision == "fp16":
        graph, rewrites = to_float16_in_place(graph, rewrites, progress)
        final = compare(graph, references, progress, "validate-fp16", "Validating float16 against PyTorch")
        require_logit_diff(final, thresholds.max_float16_logit_diff, "float16 ")
        require_agreement(final, "float16", thresholds.min_agreement)

    progress.start("manifest", "Hashing files and writing manifest.json")
    manifest = Manifest(
        alias=alias,
        source=Source(resolved.kind, resolved.value, resolved.sha256),
        architecture=architecture(loaded),
        model_type=loaded.model_type,
        parameter_count=parameter_count(loaded),
        context_length=context_length(loaded),
        eos_token_ids=eos_ids,
        chat_template=has_chat_template(staging),
        capabilities=capabilities(loaded),
        quantization=mode,
        onnx_file=graph.name,
        files=file_entries(staging),
        validation=validation_record(
            base,
            final,
            mode != "none",
            precision == "fp16",
            thresholds,
            prompts=len(PROMPTS),
            decode_steps=base.decode_steps,
        ),
        versions=tool_versions(),
        created_at=now_iso(),
        export_seconds=round(time.monotonic() - started, 1),
        graph_rewrites=list(rewrites),
        dtype=precision,
        kv_cache_dtype=KV_CACHE_DTYPE if precision == "fp16" else "float32",
        logits_dtype=LOGITS_DTYPE,
    )
    write_manifest(staging, manifest)
    progress.finish("manifest", f"{len(manifest.files)} files, {manifest.size_bytes / 1e6:.1f} MB")
    return manifest


def _convert(
    loaded: TorchSourceModel, staging: Path, eos_ids: list[int], progress: ExportProgress, *, pack: bool
) -> tuple[Path, tuple[str, ...]]:
    """The float ONNX graph in `staging`, fused for decoding where that was measured to help (`pack`: see optimize),
    and the rewrites applied."""
    progress.start("convert", "Exporting to ONNX with Optimum (text-generation-with-past)")
    graph = export_onnx(loaded, staging, eos_ids)
    progress.finish("convert", _size(graph))
    progress.start("optimize", "Optimizing the graph for decoding (rotary, attention, last-position logits)")
    steps = optimize_for_decoding(graph, loaded.model.config, large=is_large(graph), pack=pack)
    progress.finish("optimize", ", ".join(steps) if steps else "nothing to optimize")
    return graph, steps


def default_alias(resolved: ResolvedSource, mode: QuantizeMode, precision: Dtype = "fp32") -> str:
    """The folder, file or repository name, made alias-safe; quantized exports get a `-int8`/`-int4` suffix,
    float16 exports `-fp16`."""
    if resolved.kind == "default":
        base = DEFAULT_ALIAS
    elif resolved.kind == "hub":
        base = resolved.value.rsplit("/", 1)[-1]
    else:
        assert resolved.path is not None
        base = resolved.path.stem if resolved.is_gguf else resolved.path.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"
    if precision == "fp16":
        return f"{base}-fp16"
    return base if mode == "none" else f"{base}-{mode}"


def _threshold(flag: str, value: float | None, default: float, upper: float | None = None) -> float:
    if value is None:
        return default
    if value < 0 or (upper is not None and value > upper):
        bound = f"between 0 and {upper:g}" if upper is not None else "zero or more"
        raise ExportError(errors.INVALID_OPTION, f"{flag} {value:g} is out of range: it must be {bound}.")
    return value


def _size(path: Path) -> str:
    return f"{path.name}, {graph_bytes(path) / 1e6:.1f} MB"
