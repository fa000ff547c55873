"""SAM 3's text tokenizer: CLIP's byte-level BPE, laid out as Meta's ``SimpleTokenizer`` lays it out.

The vocabulary is CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (a header line, then one merge per line): 256 byte
symbols, the same with the end-of-word marker ``</w>``, one entry per merge, then the start and end tokens. The BPE
itself is transformers' ``CLIPTokenizer`` (the *tokenizers* library); this module builds it from that file and lays
out the ids as Meta's model expects: ``[start, phrase tokens..., end]``, cut to the context length (the last kept
token becoming ``end``) and padded with id 0. A phrase is cleaned as Meta cleans it (HTML entities unescaped,
whitespace collapsed, lower case).
"""

from __future__ import annotations

import gzip
import html
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["ConceptTokenizer"]

#: Meta's context length for SAM 3's text encoder.
CONTEXT_LENGTH = 32
_START, _END = "<start_of_text>", "<end_of_text>"
# Meta's SimpleTokenizer keeps at most this many merges (CLIP's 49408-token vocabulary).
_MAX_MERGES = 49152 - 256 - 2


def _byte_symbols() -> list[str]:
    """CLIP's byte → printable-character table (GPT-2's), in CLIP's vocabulary order: the printable Latin-1 bytes
    (as themselves) first, then every other byte, mapped to code points from 256 upwards, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


class ConceptTokenizer:
    """Phrase → token ids ``[1, 32]`` (int64) for SAM 3's text encoder.

    Build it with :meth:`from_bpe_file` (Meta's / CLIP's vocabulary file) or :meth:`from_pretrained` (a
    transformers-format folder with ``vocab.json`` and ``merges.txt``).
    """

    def __init__(self, tokenizer: Any, start_id: int, end_id: int, context_length: int = CONTEXT_LENGTH) -> None:
        self._tokenizer = tokenizer
        self.start_id, self.end_id = start_id, end_id
        self.context_length = context_length

    @classmethod
    def from_bpe_file(cls, path: str | Path) -> ConceptTokenizer:
        """Read a gzip'ed BPE merges file (``bpe_simple_vocab_16e6.txt.gz``).

        Raises:
            ValueError: the file cannot be read as a gzip'ed merges list.
        """
        from transformers import CLIPTokenizer

        try:
            lines = gzip.decompress(Path(path).read_bytes()).decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a gzip'ed BPE vocabulary: {exc}") from None
        merges = [tuple(line.split()) for line in lines[1 : _MAX_MERGES + 1] if line.strip()]
        symbols = _byte_symbols()
        vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [_START, _END]
        vocab = {token: index for index, token in enumerate(vocab_list)}
        tokenizer = CLIPTokenizer(
            vocab=vocab,
            merges=merges,  # type: ignore[arg-type]  # the tokenizers library takes (left, right) pairs
            unk_token=_END,
            bos_token=_START,
            eos_token=_END,
            pad_token=_END,
        )
        return cls(tokenizer, vocab[_START], vocab[_END])

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ConceptTokenizer:
        """A transformers-format CLIP tokenizer folder (as in the ``facebook/sam3`` hub repository)."""
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(str(directory))
        return cls(tokenizer, int(tokenizer.bos_token_id), int(tokenizer.eos_token_id))

    def __call__(self, phrase: str) -> torch.Tensor:
        """Token ids ``[1, context_length]`` of ``phrase`` (start, BPE tokens, end, zero padding)."""
        cleaned = re.sub(r"\s+", " ", html.unescape(html.unescape(phrase))).strip().lower()
        ids = [self.start_id, *self._tokenizer.encode(cleaned, add_special_tokens=False), self.end_id]
        if len(ids) > self.context_length:
            ids = ids[: self.context_length]
            ids[-1] = self.end_id
        out = torch.zeros(1, self.context_length, dtype=torch.long)
        out[0, : len(ids)] = torch.tensor(ids)
        return out
