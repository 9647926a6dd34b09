"""Offscreen renderer that keeps one GL context for the env's lifetime.

A new model is compiled at every reset; re-creating the GL context each time would cost ~0.3 s, so only the
MuJoCo render context (textures, buffers) is rebuilt per model.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np


def _load_triton_first() -> None:
    """Load Triton's LLVM before the software GL driver loads its own.

    Mesa's llvmpipe (software EGL) and Triton each bring an LLVM; whichever comes second clashes with the first,
    and `import triton` after a GL context exists crashes the process (torch imports it with torch._dynamo,
    so evaluating the scripted expert and then loading a model in one process died). In this order both work."""
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton._C.libtriton")


def _gl_context(size: int):
    """A headless GL context for MUJOCO_GL (egl by default), even if mujoco was imported before it was set."""
    _load_triton_first()
    backend = os.environ.get("MUJOCO_GL", "egl").lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        GLContext = mujoco.GLContext
    return GLContext(size, size)


class OffscreenRenderer:
    """Renders named cameras of the current model into uint8 HxWx3 arrays."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._gl = _gl_context(size)
        self._context: mujoco.MjrContext | None = None
        self._scene: mujoco.MjvScene | None = None
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._viewport = mujoco.MjrRect(0, 0, size, size)

    def bind(self, model: mujoco.MjModel) -> None:
        """Prepare render state for a freshly compiled model."""
        self._gl.make_current()
        if self._context is not None:
            self._context.free()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=200)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            self._scene.flags[flag] = 0

    def render(self, model: mujoco.MjModel, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """One RGB frame from a fixed camera, top row first."""
        assert self._context is not None and self._scene is not None, "bind(model) first"
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._viewport, self._scene, self._context)
        pixels = np.empty((self.size, self.size, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(pixels, None, self._viewport, self._context)
        return pixels[::-1].copy()

    def close(self) -> None:
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
        self._gl.free()
