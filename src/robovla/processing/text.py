"""Instruction -> prompt -> token ids: the reference's prompt and the checkpoint's own tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from robovla.errors import RobovlaError

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
VL_PROMPT_TEMPLATE = "In: {question}\nOut:"  # Prismatic's plain prompt, for vision-language questions


def build_prompt(instruction: str) -> str:
    """The prompt every reference caller uses (instruction lower-cased, one newline, no trailing space)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise RobovlaError("instruction must be a non-empty string")
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


def build_vl_prompt(question: str) -> str:
    """A vision-language question's prompt: the action prompt's frame around the question itself."""
    if not isinstance(question, str) or not question.strip():
        raise RobovlaError("question must be a non-empty string")
    return VL_PROMPT_TEMPLATE.format(question=question.lower())


class TextTokenizer:
    """The checkpoint's fast tokenizer (`tokenizer.json`, read with the `tokenizers` library; no remote code)."""

    def __init__(self, tokenizer_json: str | Path, pad_token_id: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_json)
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise RobovlaError(f"cannot read tokenizer {self.path}: {error}") from None
        self.bos_token_id = self._required_id("<s>")
        self.eos_token_id = self._required_id("</s>")
        pad = self._tok.token_to_id("<PAD>")
        self.pad_token_id = pad if pad is not None else pad_token_id
        # The bare word-boundary piece ("▁", id 29871 in Llama-2) that precedes the action tokens.
        self.space_token_id = self._required_id("\u2581")

    def _required_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise RobovlaError(f"tokenizer {self.path} has no {token!r} token")
        return token_id

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids with BOS prepended (the checkpoint's post-processor) and no EOS."""
        ids = self._tok.encode(text).ids
        if not ids or ids[0] != self.bos_token_id:
            ids = [self.bos_token_id] + ids
        return ids

    @property
    def backend(self):
        """The `tokenizers.Tokenizer` itself (for vocabulary checks that read its pieces)."""
        return self._tok

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in ids]

    def save(self, folder: Path) -> None:
        self._tok.save(str(folder / "tokenizer.json"))
