"""The vision encoder of a vision-language export: the tower with its connector as one ONNX graph
(`pixel_values [frames, 3, S, S] -> image_features [frames, tokens, hidden]`), exported through Optimum's
export API with a config built on Optimum's own for the tower's family, and its conversion to int8 or float16
for quantized and float16 exports.

The conversion keeps the graph's input and output float32, so the engine feeds and reads every encoder the
same way; the export keeps a converted encoder only when the whole image path still agrees with PyTorch
(exports/vision.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exports import errors
from exports.conversion import _quiet
from exports.errors import ExportError
from exports.quantize import quantize_graph
from exports.staging import replace_graph
from inference.manifest import EncoderPrecision

if TYPE_CHECKING:
    from exports.vision_loading import LoadedVision

ENCODER_FILE = "vision_encoder.onnx"
OPSET = 17  # LayerNormalization as one operator


def export_encoder(loaded: LoadedVision, path: Path, size: int) -> None:
    """pixel_values [frames, 3, size, size] -> image_features [frames, tokens_per_image, hidden], through
    Optimum's export API with the tower family's ONNX config (exports/vision_configs.py)."""
    import torch
    from optimum.exporters.onnx.convert import export

    from exports.vision_configs import vision_encoder_config

    vision_config = loaded.model.config.vision_config
    pixels = torch.zeros(1, 3, size, size)
    encoder = _llava_encoder(loaded) if loaded.model_type == "llava" else _idefics3_encoder(loaded, pixels)
    try:
        with _quiet():
            export(encoder, vision_encoder_config(loaded.model_type, vision_config), path, opset=OPSET)
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"the vision encoder could not be exported ({type(exc).__name__}: {exc})."
        ) from exc


def _llava_encoder(loaded: LoadedVision) -> Any:
    """The CLIP/SigLIP tower's chosen layer (class token dropped or kept as configured) and the projector."""
    import torch

    config = loaded.model.config

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            self.config = config.vision_config  # what Optimum's export reads and sets

        def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
            outputs = self.model.model.vision_tower(pixel_values, output_hidden_states=True)
            hidden = outputs.hidden_states[config.vision_feature_layer]
            if config.vision_feature_select_strategy == "default":
                hidden = hidden[:, 1:]
            return {"image_features": self.model.model.multi_modal_projector(hidden)}

    return Encoder(loaded.model)


def _idefics3_encoder(loaded: LoadedVision, pixels: Any) -> Any:
    """The SigLIP tower with the connector (pixel shuffle, projection), for whole frames (an image or a tile)."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any, positions: torch.Tensor) -> None:
            super().__init__()
            self.model = model
            self.positions = positions
            self.config = model.config.vision_config  # what Optimum's export reads and sets

        def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
            # every patch of a whole (unpadded) frame is real, so the patch positions are those of a full
            # frame (taken from an eager run) and no attention mask is needed; the tower's own position
            # bucketing does not trace
            tower = self.model.model.vision_model
            patches = tower.embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
            hidden = patches + tower.embeddings.position_embedding(self.positions)
            hidden = tower.encoder(inputs_embeds=hidden, attention_mask=None).last_hidden_state
            return {"image_features": self.model.model.connector(tower.post_layernorm(hidden))}

    seen: list[torch.Tensor] = []
    embedding = loaded.model.model.vision_model.embeddings.position_embedding
    hook = embedding.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0]))
    with torch.inference_mode():
        loaded.model.model.vision_model(pixel_values=pixels)
    hook.remove()
    return Encoder(loaded.model, seen[0][:1].clone())


def encoder_target(quantization: str, dtype: str) -> EncoderPrecision:
    """What a quantized or float16 export tries for its encoder: int8 for either quantization (dynamic int8 of
    the MatMuls, the rules of the decoder's int8), float16 for a float16 export; fp32 for a float32 export."""
    if quantization != "none":
        return "int8"
    return "fp16" if dtype == "fp16" else "fp32"


def convert_encoder(path: Path, precision: EncoderPrecision) -> None:
    """Rewrite the float32 encoder graph at `path` in place as `precision`, its input and output float32."""
    if precision == "int8":
        replace_graph(path, ".int8", lambda output: quantize_graph(path, output, "int8"))
    elif precision == "fp16":
        replace_graph(path, ".float16", lambda output: _float16(path, output))


def _float16(path: Path, output: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(output))
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"the vision encoder could not be converted to float16 ({type(exc).__name__})."
        ) from exc


def try_converted_encoder(path: Path, precision: EncoderPrecision, keep: Callable[[], bool]) -> bool:
    """Convert the encoder at `path`, then keep it if `keep()` (a validation run over the converted export)
    says so; otherwise, or when the conversion fails, put the float32 graph back. Returns whether the
    converted encoder was kept."""
    original = path.with_name(f".{path.name}.float32")
    shutil.copyfile(path, original)
    try:
        convert_encoder(path, precision)
        kept = keep()
    except ExportError:
        original.replace(path)
        return False
    except BaseException:
        original.replace(path)
        raise
    if kept:
        original.unlink()
    else:
        original.replace(path)
    return kept
