"""Diffusion Policy (Chi et al. 2023), OpenVLA's main baseline: its own policy type beside the VLA."""

from robovla.diffusion.config import POLICY_TYPE, DiffusionConfig
from robovla.diffusion.model import DiffusionInputs, DiffusionPolicy
from robovla.diffusion.processor import DiffusionProcessor
from robovla.diffusion.runner import DiffusionRunner

__all__ = ["POLICY_TYPE", "DiffusionConfig", "DiffusionInputs", "DiffusionPolicy", "DiffusionProcessor",
           "DiffusionRunner"]
