"""The one processing chain shared by training, serving and evaluation; it imports nothing from `robovla.model`.

- `images`: image(s) -> per-backbone resize + normalise -> pixel_values
- `text`: instruction -> prompt -> token ids
- `actions`: actions <-> normalised values <-> action token ids
- `processor`: `VLAProcessor`, the token layout of a whole example in both directions
- `prediction`: `ActionPrediction`, what generated ids decode to
"""

from robovla.processing.actions import ActionNormalizer, ActionTokenizer, resolve_unnorm_key, vector_normalizer
from robovla.processing.images import ImageProcessorConfig, ImageTransform, load_image_file, to_pil_rgb
from robovla.processing.prediction import ActionPrediction
from robovla.processing.processor import IGNORE_INDEX, ModelInputs, PromptBatch, VLAProcessor
from robovla.processing.text import PROMPT_TEMPLATE, TextTokenizer, build_prompt

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_TEMPLATE",
    "ActionNormalizer",
    "ActionPrediction",
    "ActionTokenizer",
    "ImageProcessorConfig",
    "ImageTransform",
    "ModelInputs",
    "PromptBatch",
    "TextTokenizer",
    "VLAProcessor",
    "build_prompt",
    "load_image_file",
    "resolve_unnorm_key",
    "to_pil_rgb",
    "vector_normalizer",
]
