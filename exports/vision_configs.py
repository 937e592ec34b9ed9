"""Optimum ONNX configs for the two graphs of a vision-language model.

Optimum has no export config for Idefics3 or LLaVA in this version, so both go through its export API with a
custom config built on one of its own:
- the text decoder: the text model's own config (rotary, GQA cache layout), with `inputs_embeds` in place of
  `input_ids`, so image features can take the place of the image tokens' embeddings;
- the vision encoder: the tower family's vision config, with the connector's `image_features` as the output.
"""

from __future__ import annotations

from typing import Any


def embeds_decoder_config(text_config: Any) -> Any:
    """An OnnxConfig for `text-generation-with-past` of `text_config`'s family, fed `inputs_embeds`."""
    from optimum.utils.input_generators import DummyInputGenerator

    base = _registered_config(text_config.model_type, "text-generation-with-past")

    class EmbedsGenerator(DummyInputGenerator):
        SUPPORTED_INPUT_NAMES = ("inputs_embeds",)

        def __init__(
            self, task: str, normalized_config: Any, batch_size: int = 2, sequence_length: int = 16, **_: Any
        ) -> None:
            self.batch_size = batch_size
            self.sequence_length = sequence_length
            self.hidden_size = normalized_config.hidden_size

        def generate(
            self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"
        ) -> Any:
            shape = [self.batch_size, self.sequence_length, self.hidden_size]
            return self.random_float_tensor(shape, framework=framework, dtype=float_dtype)

    class EmbedsDecoderOnnxConfig(base):  # type: ignore[misc, valid-type]
        DUMMY_INPUT_GENERATOR_CLASSES = (EmbedsGenerator, *base.DUMMY_INPUT_GENERATOR_CLASSES)
        PAD_ATTENTION_MASK_TO_PAST = False  # Optimum pads by `input_ids`' length; done below by the embeddings'

        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            common = super().inputs
            inputs = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"}}
            inputs.update({name: axes for name, axes in common.items() if name != "input_ids"})
            return inputs

        def generate_dummy_inputs(self, framework: str = "pt", **kwargs: Any) -> dict[str, Any]:
            dummy = super().generate_dummy_inputs(framework, **kwargs)
            length = dummy["inputs_embeds"].shape[1] + dummy["past_key_values"][0][1].shape[-2]
            dummy["attention_mask"] = DummyInputGenerator.pad_input_on_dim(
                dummy["attention_mask"], desired_length=length, dim=1
            )
            return dummy

    return EmbedsDecoderOnnxConfig(text_config, task="text-generation", use_past=True, use_past_in_inputs=True)


def vision_encoder_config(model_type: str, vision_config: Any) -> Any:
    """An OnnxConfig for the vision tower with its connector: Optimum's config of the tower's family (SigLIP for
    Idefics3, whose tower is SigLIP's under its own model type; the registered CLIP or SigLIP vision config for
    LLaVA), with the connector's output, `image_features [images, tokens, hidden]`, in place of the tower's."""
    from optimum.exporters.onnx.model_configs import SiglipVisionModelOnnxConfig

    if model_type == "idefics3":
        base = SiglipVisionModelOnnxConfig
    else:
        base = _registered_config(vision_config.model_type, "feature-extraction")

    class VisionEncoderOnnxConfig(base):  # type: ignore[misc, valid-type]
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return {"pixel_values": {0: "images"}}  # frames of the encoder's one square size

        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            return {"image_features": {0: "images"}}

    return VisionEncoderOnnxConfig(vision_config, task="feature-extraction")


def _registered_config(model_type: str, task: str) -> Any:
    """The OnnxConfig class Optimum registers for `model_type` and `task` (its constructor is a partial)."""
    from optimum.exporters.tasks import TasksManager

    constructor = TasksManager.get_exporter_config_constructor(
        exporter="onnx", model_type=model_type, task=task, library_name="transformers"
    )
    return getattr(constructor, "func", constructor)
