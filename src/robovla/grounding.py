"""Grounding sources: who says where the instruction's objects are, for a model with grounding tokens.

A grounding model first generates where the named objects are (its grounding tokens: target and goal x, y on the
table), then the action conditioned on them. Who fills those tokens is a component the `Policy` is given:

- `ModelTokens` ("tokens"): the language model says them itself (argmax per token).
- `PointerGrounding` ("pointer"): a grounding pointer (`robovla fit-pointer`) reads the prefix pass's hidden
  states and picks the image patch of each object (`robovla.model.pointer`).
- `GivenGrounding` ("given"): each observation carries its own values under `"grounding"` (the simulator's true
  positions in evaluation, an object detector on a robot); NaN entries are left to another source.

Each source turns a batch's observations (and, if it reads them, the prefix's hidden states) into positions
[B, G] in the dataset's units, NaN where it has no opinion; the policy emits them as forced grounding tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from robovla.errors import RobovlaError

if TYPE_CHECKING:
    from robovla.model.pointer import GroundingPointer
    from robovla.model.vla import Prefix

GROUNDING_KEY = "grounding"  # an observation's given grounding values
GROUNDING_CHOICES = ("pointer", "tokens", "given")


class GroundingSource(ABC):
    name: ClassVar[str]
    reads_observation: ClassVar[bool] = False  # needs each observation's "grounding" entry

    @property
    def layer(self) -> int | None:
        """The language-model layer whose input hidden states this source reads from the prefix pass (None: none)."""
        return None

    @abstractmethod
    def estimate(self, observations: Sequence[Mapping[str, Any]], prefix: "Prefix") -> np.ndarray | None:
        """[B, G] positions in the dataset's units (NaN: no opinion), or None to leave every token to the model."""


class ModelTokens(GroundingSource):
    """The language model says its own grounding tokens (the recipe as trained)."""

    name = "tokens"

    def estimate(self, observations: Sequence[Mapping[str, Any]], prefix: "Prefix") -> None:
        return None


class PointerGrounding(GroundingSource):
    """A grounding pointer's estimate from the prefix's hidden states entering its layer."""

    name = "pointer"

    def __init__(self, pointer: "GroundingPointer") -> None:
        self.pointer = pointer

    @property
    def layer(self) -> int:
        return self.pointer.config.layer

    def estimate(self, observations: Sequence[Mapping[str, Any]], prefix: "Prefix") -> np.ndarray:
        from robovla.model.pointer import prefix_parts

        if prefix.hidden is None:
            raise RobovlaError("the grounding pointer needs the prefix's hidden states: prefill with its layer")
        parts = prefix_parts(prefix.hidden, prefix.mask, prefix.n_patches, self.pointer.config.max_text)
        return self.pointer.positions(self.pointer(*parts)).cpu().numpy().astype(np.float64)


class GivenGrounding(GroundingSource):
    """Values handed in with each observation (`observation["grounding"]`, [G], NaN where `fallback` decides)."""

    name = "given"
    reads_observation = True

    def __init__(self, fallback: GroundingSource | None = None) -> None:
        self.fallback = fallback or ModelTokens()

    @property
    def layer(self) -> int | None:
        return self.fallback.layer

    def estimate(self, observations: Sequence[Mapping[str, Any]], prefix: "Prefix") -> np.ndarray:
        rows = [np.asarray(o[GROUNDING_KEY], dtype=np.float64) for o in observations]
        if len({row.shape for row in rows}) != 1 or rows[0].ndim != 1:
            raise RobovlaError(f"every observation's {GROUNDING_KEY!r} must be a vector of the same length, got "
                               f"shapes {sorted({row.shape for row in rows})}")
        given = np.stack(rows)
        if np.isnan(given).any():
            other = self.fallback.estimate(observations, prefix)
            if other is not None:
                given = np.where(np.isnan(given), other, given)
        return given


def grounding_source(model: Any, choice: "str | GroundingSource | None" = None) -> GroundingSource:
    """The source a policy uses: `choice` as given, or by name; None takes the recipe's (its pointer, if fitted).

    "given" falls back to the recipe's source for the values an observation leaves NaN."""
    if isinstance(choice, GroundingSource):
        source = choice
    else:
        name = choice or model.recipe.grounding_source
        if name not in GROUNDING_CHOICES:
            raise RobovlaError(f"unknown grounding source {name!r}; valid: {', '.join(GROUNDING_CHOICES)}")
        if name == "given":
            source = GivenGrounding(grounding_source(model, None))
        elif name == "pointer":
            if model.grounding_pointer is None:
                raise RobovlaError("grounding source 'pointer': this model has no grounding pointer "
                                   "(robovla fit-pointer)")
            source = PointerGrounding(model.grounding_pointer)
        else:
            source = ModelTokens()
    if not model.recipe.grounding and not isinstance(source, ModelTokens):
        raise RobovlaError(f"grounding source {source.name!r}: this model has no grounding tokens "
                           f"(trained without --grounding)")
    return source
