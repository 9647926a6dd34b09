"""robovla: an open Vision-Language-Action stack (OpenVLA-compatible model, data, training, serving, sim).

Names are imported on first use, so light users (`robovla.client` on a robot, `robovla --help`) never load
torch.
"""

from __future__ import annotations

from robovla._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": "robovla.config",
    "Recipe": "robovla.config",
    "TextConfig": "robovla.config",
    "VLAConfig": "robovla.config",
    "list_presets": "robovla.config",
    "preset": "robovla.config",
    "RobovlaError": "robovla.errors",
    "ActionTokenizer": "robovla.processing",
    "load_pretrained": "robovla.model.checkpoint",
    "save_pretrained": "robovla.model.checkpoint",
    "build_model": "robovla.model.factory",
    "parameter_counts": "robovla.model.factory",
    "ActionNormalizer": "robovla.processing",
    "VLA": "robovla.model.vla",
    "ActionPrediction": "robovla.processing",
    "Policy": "robovla.policy",
    "Decoding": "robovla.model.decoding",
    "GroundingSource": "robovla.grounding",
    "ModelTokens": "robovla.grounding",
    "PointerGrounding": "robovla.grounding",
    "GivenGrounding": "robovla.grounding",
    "ModelInputs": "robovla.processing",
    "VLAOutput": "robovla.model.vla",
    "VLAProcessor": "robovla.processing",
    "build_prompt": "robovla.processing",
    "load_image_file": "robovla.processing",
    "DiffusionConfig": "robovla.diffusion",
    "DiffusionInputs": "robovla.diffusion",
    "DiffusionPolicy": "robovla.diffusion",
    "DiffusionProcessor": "robovla.diffusion",
    "DiffusionRunner": "robovla.diffusion",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("robovla", _EXPORTS)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
