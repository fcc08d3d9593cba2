"""A byte-level BPE tokenizer learnt from the demo world's captions, in CLIP's conventions.

The service talks to every model through ``CLIPTokenizer``, so the demo vocabulary follows
CLIP's layout exactly: lower-cased, NFC-normalised text split by CLIP's regex, byte-level
symbols, ``</w>`` marking the end of a word, and ``<|startoftext|>``/``<|endoftext|>`` as the
last two ids. All 256 byte symbols (with and without ``</w>``) are in the vocabulary, as in CLIP,
so text the world never produced (a moderator's own prompt) still tokenizes.

The merges are learnt here rather than with ``tokenizers.trainers.BpeTrainer``: that trainer
breaks ties between equally frequent pairs by hash-map order, which differs from run to run,
and a merge order that changes changes every token id and so the whole training run. The
corpus has a few hundred distinct words, so the plain algorithm is instant.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
EOW = "</w>"
_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+"""
)
"""CLIP's pre-tokenisation pattern (the one ``CLIPTokenizer`` itself uses)."""


def _pre_tokenizer() -> Tokenizer:
    """Normaliser and pre-tokeniser exactly as ``CLIPTokenizer`` sets them up."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tok


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Byte-level words (as CLIP's pre-tokeniser cuts them) and how often each occurs."""
    pre = _pre_tokenizer()
    assert pre.normalizer is not None
    assert pre.pre_tokenizer is not None
    counts: Counter[str] = Counter()
    for text in texts:
        pieces = pre.pre_tokenizer.pre_tokenize_str(pre.normalizer.normalize_str(text))
        counts.update(piece for piece, _ in pieces)
    return counts


def learn_merges(
    counts: Counter[str], max_merges: int, min_frequency: int = 2
) -> list[tuple[str, str]]:
    """Greedy BPE: merge the most frequent adjacent pair; ties go to the smaller pair."""
    words = {w: [*w[:-1], w[-1] + EOW] for w in sorted(counts)}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, symbols in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for w, symbols in words.items():
            i, out = 0, []
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = out
    return merges


def train_tokenizer(texts: Iterable[str], max_merges: int = 4000) -> CLIPTokenizer:
    """Learn merges from ``texts`` and return a ``CLIPTokenizer`` with CLIP's id layout.

    Ids follow CLIP: 256 byte symbols, the same with ``</w>``, then merges in rank order, then
    the two specials. Merging stops once no pair occurs twice (every caption word is then a
    single token), so ``max_merges`` is a ceiling, not a target.
    """
    merges = learn_merges(word_counts(texts), max_merges)
    base = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for sym in [*base, *(b + EOW for b in base), *(a + b for a, b in merges), BOS, EOS]:
        vocab.setdefault(sym, len(vocab))
    # transformers annotates merges as strings, but CLIPTokenizer needs (a, b) tuples.
    return CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
