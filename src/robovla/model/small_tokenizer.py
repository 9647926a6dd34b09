"""A small Llama-2-format tokenizer for presets trained from scratch on a CPU.

Same pipeline as Llama-2's tokenizer.json (prepend "▁", spaces -> "▁", BPE with byte fallback, BOS
post-processor), but a vocabulary of ~1k instead of 32k, so the embedding and LM head stay small. Layout:
0 <unk>, 1 <s>, 2 </s>, 3..258 byte pieces, then BPE pieces (including the bare "▁"), then the 256 action
tokens `<act_k>` as the last ids of the base vocabulary (so no text piece shares an id with an action, unlike
Llama-2), then <PAD>. Regenerate the packaged copy with `python -m robovla.model.small_tokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

SPECIALS = ["<unk>", "<s>", "</s>"]
PAD = "<PAD>"
PACKAGED_NAME = "tabletop-small"


def train_small_tokenizer(corpus: Iterable[str], base_vocab_size: int = 768, n_action_bins: int = 256):
    """Train BPE pieces on `corpus` and lay the vocabulary out as described above."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    n_text = base_vocab_size - n_action_bins - len(SPECIALS) - len(byte_pieces)
    if n_text < 64:
        raise ValueError(f"base_vocab_size {base_vocab_size} leaves only {n_text} text pieces")
    normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    texts = [normalizer.normalize_str(t) for t in corpus]

    scratch = Tokenizer(BPE())
    # Train word-internal pieces only (as SentencePiece does for Llama-2): no piece spans a word boundary.
    scratch.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Split("\n", behavior="isolated"),
        ]
    )
    trainer = BpeTrainer(vocab_size=n_text, show_progress=False, initial_alphabet=["\u2581"])
    scratch.train_from_iterator(texts, trainer)
    trained = json.loads(scratch.to_str())["model"]
    pieces = sorted(trained["vocab"], key=trained["vocab"].get)[:n_text]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + byte_pieces + pieces)}
    action_ids = range(base_vocab_size - n_action_bins, base_vocab_size)
    # Reserve the action ids (and any gap before them) as pieces BPE can never form.
    for i in range(len(vocab), base_vocab_size):
        vocab[f"<act_{base_vocab_size - 1 - i}>" if i in action_ids else f"<unused_{i}>"] = i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    merges = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]

    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizer
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens(SPECIALS + [PAD])
    return tokenizer


def tabletop_corpus(samples_per_suite: int = 400, seed: int = 0) -> list[str]:
    """Every phrasing the built-in simulator produces (all suites), plus the prompt template's words."""
    from robovla.processing import build_prompt
    from robovla.sim import tasks, variations

    rng = np.random.default_rng(seed)
    instructions = sorted(
        {tasks.sample_episode(rng, suite).instruction for suite in variations.SUITES.values()
         for _ in range(samples_per_suite)}
    )
    return [build_prompt(text) for text in instructions]


def main() -> None:
    tokenizer = train_small_tokenizer(tabletop_corpus())
    folder = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / PACKAGED_NAME
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    print(f"wrote {folder / 'tokenizer.json'} ({tokenizer.get_vocab_size()} ids)")


if __name__ == "__main__":
    main()
