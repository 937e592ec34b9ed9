"""Choosing the ONNX Runtime execution provider once per process, and the session options we share.

`onnxruntime-gpu` lists `CUDAExecutionProvider` even on a machine with no GPU or no CUDA libraries, and asking
for it there prints a screen of errors and silently falls back to CPU. So `auto` probes by opening a real
(tiny, in-memory) session with the CUDA provider and its own logging silenced, keeps the answer, and logs one line.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort

from inference.errors import HF_CONFIGURATION_ERROR, InferenceError

ProviderChoice = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# A one-node ONNX model (y = x + x, float[1]); serialized once with `onnx.helper` so serving needs no `onnx`.
_PROBE_MODEL = base64.b64decode(
    "CAg6OQoOCgF4CgF4EgF5IgNBZGQSBXByb2JlWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ=="
)
_ORT_DEFAULT_SEVERITY = 2
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

log = logging.getLogger(__name__)
_probe_lock = threading.Lock()
_cuda_usable: bool | None = None


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Settings for every session the engine opens (fixed once a session is open): provider, threads,
    graph optimization."""

    execution_provider: ProviderChoice = "auto"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    inter_op_num_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    device_id: int = 0


def cuda_usable(device_id: int = 0) -> bool:
    """Whether a CUDA session really opens and runs here; probed once per process, silently."""
    global _cuda_usable
    with _probe_lock:
        if _cuda_usable is None:
            _cuda_usable = _probe_cuda(device_id)
        return _cuda_usable


def _probe_cuda(device_id: int) -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(_PROBE_MODEL, options, providers=[(CUDA, {"device_id": device_id}), CPU])
        if CUDA not in session.get_providers():
            return False
        import numpy as np

        session.run(None, {"x": np.ones(1, dtype=np.float32)})
        return True
    except Exception as exc:  # any failure means "no usable GPU", which is a normal answer here
        log.debug("CUDA probe failed: %s", exc)
        return False
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)


def resolve_provider(choice: str, device_id: int = 0) -> str:
    """Map a setting (`auto`, `cpu`, `cuda`) onto the provider name to use, failing clearly for `cuda`."""
    if choice == "cpu":
        return CPU
    if choice == "cuda":
        if not cuda_usable(device_id):
            raise InferenceError(
                HF_CONFIGURATION_ERROR,
                "execution_provider is 'cuda' but no usable CUDA device was found; "
                "use 'auto' or 'cpu', or install the CUDA 13 and cuDNN 9 libraries",
                {"execution_provider": choice},
            )
        return CUDA
    if choice == "auto":
        return CUDA if cuda_usable(device_id) else CPU
    raise InferenceError(
        HF_CONFIGURATION_ERROR,
        f"execution_provider must be auto, cpu or cuda, not {choice!r}",
        {"execution_provider": choice},
    )


_logged: set[tuple[str, str]] = set()


def describe_choice(choice: str, provider: str) -> str:
    """One line that says which provider serves, and why; logged once per distinct answer."""
    reason = {
        ("auto", CUDA): "a CUDA device answered the probe",
        ("auto", CPU): "no usable CUDA device, using CPU",
        ("cuda", CUDA): "requested",
        ("cpu", CPU): "requested",
    }.get((choice, provider), "")
    line = f"ONNX Runtime {ort.__version__}: execution provider {provider} ({choice}: {reason})"
    if (choice, provider) not in _logged:
        _logged.add((choice, provider))
        log.info(line)
    return line


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    """ONNX Runtime session options built from our settings, validated with a readable message."""
    level = _OPT_LEVELS.get(options.graph_optimization)
    if level is None:
        raise InferenceError(
            HF_CONFIGURATION_ERROR,
            f"graph_optimization must be one of {', '.join(_OPT_LEVELS)}, not {options.graph_optimization!r}",
        )
    if options.intra_op_num_threads < 0 or options.inter_op_num_threads < 0:
        raise InferenceError(HF_CONFIGURATION_ERROR, "thread counts must be 0 (default) or positive")
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = options.intra_op_num_threads
    so.inter_op_num_threads = options.inter_op_num_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def provider_list(provider: str, device_id: int = 0) -> list[str | tuple[str, dict[str, object]]]:
    """The `providers=` argument for `InferenceSession`: CUDA first with CPU for unsupported nodes."""
    if provider == CUDA:
        return [(CUDA, {"device_id": device_id}), CPU]
    return [CPU]
