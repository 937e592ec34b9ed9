"""Load a checked source into a PyTorch model and tokenizer (this is where torch is first imported).

GGUF files are dequantized by transformers' GGUF support. We read the tensors with
`load_gguf_checkpoint` ourselves instead of `from_pretrained(gguf_file=...)`, because the latter
insists on `accelerate`, which the export needs for nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exports import errors
from exports.errors import ExportError
from exports.sources import ResolvedSource, hub_endpoint, resolve_folder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Tokens that end an assistant turn in common chat templates; when the template uses one, it is a stop token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


@dataclass
class TorchSourceModel:
    """The export source loaded into PyTorch: the model to convert, its tokenizer, and its architecture name."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_type: str


def require_torch() -> None:
    """Fail with EXPORT_TORCH_MISSING (and how to fix it) when the export extra is not installed."""
    try:
        import optimum.exporters.onnx  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            errors.TORCH_MISSING,
            f"the export command needs PyTorch, transformers and Optimum ({exc.name} is missing): "
            "install them with `pip install 'beth-chat-service[export]'`. Serving does not need them.",
        ) from exc


def quiet_libraries() -> None:
    """Silence transformers' and Optimum's warnings and tqdm bars, which a person exporting cannot act on.

    Our own progress reports the steps instead. transformers resets its logger's level when it is
    first imported, so it is imported here first.
    """
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # export_model will say what is missing
        return
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    for name in ("optimum", "torch.onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_source(source: ResolvedSource) -> TorchSourceModel:
    """The model in float32 and eval mode, with its tokenizer; GGUF weights dequantized."""
    require_torch()
    if source.kind == "hub":
        folder = _download_hub(source.value)
        resolve_folder(folder)  # the same checks a local folder gets, now that the files are here
        loaded = _load_folder(folder)
    elif source.is_gguf:
        assert source.path is not None
        loaded = _load_gguf(source.path)
    else:
        assert source.path is not None
        loaded = _load_folder(source.path)
    _fix_eos(loaded)
    loaded.model.eval()
    loaded.model.config.use_cache = True
    return loaded


def _load_folder(folder: Path) -> TorchSourceModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(
            errors.NOT_A_MODEL,
            f"{folder}: transformers cannot load a causal language model and tokenizer from it ({exc}).",
        ) from exc
    return TorchSourceModel(model, tokenizer, model.config.model_type)


def _load_gguf(path: Path) -> TorchSourceModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
        result = model.load_state_dict(tensors, strict=False)
    except (ValueError, KeyError, OSError) as exc:
        raise ExportError(
            errors.CORRUPT_GGUF,
            f"{path}: transformers could not load the GGUF file ({type(exc).__name__}: {exc}).",
        ) from exc
    missing = [key for key in result.missing_keys if not _is_tied(model, key)]
    if missing:
        raise ExportError(
            errors.CORRUPT_GGUF,
            f"{path}: the GGUF file lacks weights the model needs: {', '.join(missing[:5])}.",
        )
    model.tie_weights()
    return TorchSourceModel(model, tokenizer, model.config.model_type)


def _is_tied(model: Any, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))


def _download_hub(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_FILE_PATTERNS, endpoint=hub_endpoint()))
    except Exception as exc:
        raise ExportError(
            errors.HUB_UNREACHABLE, f"{hub_id}: downloading from the hub failed ({type(exc).__name__}: {exc})."
        ) from exc


def _fix_eos(loaded: TorchSourceModel) -> None:
    """Make the tokenizer's eos agree with the model config.

    transformers' GGUF tokenizer conversion can name the wrong eos token (SmolLM2's GGUF comes out
    with `<|im_start|>`); the config's `eos_token_id` read from the GGUF metadata is the right one.
    """
    config_eos = loaded.model.config.eos_token_id
    first = config_eos[0] if isinstance(config_eos, list) and config_eos else config_eos
    if isinstance(first, int) and loaded.tokenizer.eos_token_id != first:
        token = loaded.tokenizer.convert_ids_to_tokens(first)
        if isinstance(token, str):
            log.info("tokenizer eos %r replaced by the config's %r", loaded.tokenizer.eos_token, token)
            loaded.tokenizer.eos_token = token


def eos_token_ids(loaded: TorchSourceModel) -> list[int]:
    """Every id that should stop generation: the generation config's, the config's, and the template's end-of-turn."""
    ids: list[int] = []

    def add(value: Any) -> None:
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, int) and item >= 0 and item not in ids:
                ids.append(item)

    generation_config = getattr(loaded.model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    add(loaded.model.config.eos_token_id)
    add(loaded.tokenizer.eos_token_id)
    template = loaded.tokenizer.chat_template if isinstance(loaded.tokenizer.chat_template, str) else ""
    vocab = loaded.tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in template and token in vocab:
            add(vocab[token])
    return ids
