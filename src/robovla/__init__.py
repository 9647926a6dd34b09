"""robovla: an open Vision-Language-Action stack (OpenVLA-compatible model, data, training, serving, sim)."""

from robovla.config import PRESETS, TextConfig, VLAConfig, list_presets, preset
from robovla.errors import RobovlaError
from robovla.model.action_tokenizer import ActionTokenizer
from robovla.model.checkpoint import load_pretrained, save_pretrained
from robovla.model.factory import build_model, parameter_counts
from robovla.model.normalization import ActionNormalizer
from robovla.model.vla import VLA, ActionPrediction, VLAOutput
from robovla.processing import VLAProcessor, build_prompt, load_image_file

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ActionNormalizer",
    "ActionPrediction",
    "ActionTokenizer",
    "RobovlaError",
    "TextConfig",
    "VLA",
    "VLAConfig",
    "VLAOutput",
    "VLAProcessor",
    "build_model",
    "build_prompt",
    "list_presets",
    "load_image_file",
    "load_pretrained",
    "parameter_counts",
    "preset",
    "save_pretrained",
]
