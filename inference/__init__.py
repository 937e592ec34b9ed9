"""The ONNX Runtime engine: export folders in, streamed text out. No web, no database, no torch."""

from inference.chat_model import ChatModel
from inference.errors import GENERIC_CODE, InferenceError
from inference.events import Event, GenerationResult, TextDelta, Usage
from inference.execution import RuntimeOptions, cuda_usable, resolve_provider
from inference.export_folder import ExportInfo, is_export_folder, read_export
from inference.generator import Generator
from inference.model import OnnxCausalLM
from inference.params import GenerationParams
from inference.pool import LoadedModel, ModelPool, PoolEvent
from inference.pool_settings import PoolSettings
from inference.run import GenerationRun
from inference.scheduler import BatchLimits
from inference.tokenizer import ChatTokenizer

__all__ = [
    "GENERIC_CODE",
    "BatchLimits",
    "ChatModel",
    "ChatTokenizer",
    "Event",
    "ExportInfo",
    "GenerationParams",
    "GenerationResult",
    "GenerationRun",
    "Generator",
    "InferenceError",
    "LoadedModel",
    "ModelPool",
    "OnnxCausalLM",
    "PoolEvent",
    "PoolSettings",
    "RuntimeOptions",
    "TextDelta",
    "Usage",
    "cuda_usable",
    "is_export_folder",
    "read_export",
    "resolve_provider",
]
