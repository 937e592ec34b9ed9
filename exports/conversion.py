"""PyTorch -> ONNX with Optimum: one decoder graph with past key values, plus config, generation config, tokenizer."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from exports import errors
from exports.errors import ExportError
from exports.loading import TorchSourceModel

TASK = "text-generation-with-past"
ONNX_FILE = "model.onnx"


def export_onnx(loaded: TorchSourceModel, output: Path, eos_ids: list[int]) -> Path:
    """Write the ONNX graph and every file the engine reads into `output`; return the graph's path.

    Optimum's own validation is off: we validate against PyTorch ourselves (exports.validation),
    with figures that end up in the manifest, and doing it twice would cost the 2-minute budget.
    """
    from optimum.exporters.onnx import onnx_export_from_model

    output.mkdir(parents=True, exist_ok=True)
    _save_side_files(loaded, output, eos_ids)
    # Optimum re-saves the tokenizer from `_name_or_path`; point it at our own copy so it never asks the hub.
    loaded.model.config._name_or_path = str(output)
    try:
        with _quiet():
            onnx_export_from_model(loaded.model, output, task=TASK, do_validation=False, device="cpu")
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED,
            f"Optimum could not export the {loaded.model_type} model to ONNX ({type(exc).__name__}: {exc}).",
        ) from exc
    graph = output / ONNX_FILE
    if not graph.is_file():
        raise ExportError(errors.CONVERSION_FAILED, f"Optimum finished but wrote no {ONNX_FILE} in {output}.")
    return graph


def _save_side_files(loaded: TorchSourceModel, output: Path, eos_ids: list[int]) -> None:
    """Tokenizer, chat template and a generation config that lists every stop id."""
    loaded.tokenizer.save_pretrained(output)
    generation_config = loaded.model.generation_config
    generation_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else list(eos_ids)
    if generation_config.pad_token_id is None and loaded.tokenizer.pad_token_id is not None:
        generation_config.pad_token_id = loaded.tokenizer.pad_token_id


@contextlib.contextmanager
def _quiet():
    """Optimum and the torch tracer warn at length about things that do not concern the user."""
    loggers = [logging.getLogger(name) for name in ("optimum", "transformers", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
