"""A generated tagging task in the sequence upload format (service.data.sequence_uploads).

Seven tags: "O" the dominant one, five tags each with words of their own (easy), and
"RARE", which shares its words with "O": an ambiguous word is RARE 30% of the time
and O otherwise, whatever its context. An unweighted model does best to call every
ambiguous word O, so it never predicts RARE; with class_weight "balanced", RARE
weighs about 50 times what O does, and calling ambiguous words RARE pays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TAG_NAMES = ["O", "PER", "LOC", "ORG", "DATE", "NUM", "RARE"]
RARE = 6
STEPS = 20  # T: every sentence is padded to this many steps
CHARS = 6  # C: characters per word, padded
O_WORDS = np.arange(1, 41)
TAG_WORDS = {tag: np.arange(41 + 10 * (tag - 1), 51 + 10 * (tag - 1)) for tag in range(1, 6)}
AMBIGUOUS_WORDS = np.arange(91, 96)
RARE_SHARE = 0.3  # of the ambiguous words' occurrences


def spelling(words: np.ndarray) -> np.ndarray:
    """Character ids (..., CHARS) of word ids: a few letters each, then padding."""
    letters = np.stack([(words // 26**i) % 26 + 1 for i in range(3)], axis=-1)
    chars = np.zeros((*words.shape, CHARS), dtype=np.int32)
    chars[..., :3] = np.where(words[..., None] != 0, letters, 0)
    return chars


def sentences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, STEPS) word ids and tags; lengths 5..15, then padding (tag 0 there)."""
    words = np.zeros((n, STEPS), dtype=np.int32)
    tags = np.zeros((n, STEPS), dtype=np.int32)
    for i in range(n):
        for t in range(int(rng.integers(5, 16))):
            kind = rng.random()
            if kind < 0.75:
                words[i, t] = rng.choice(O_WORDS)
            elif kind < 0.95:
                tag = int(rng.integers(1, 6))
                words[i, t], tags[i, t] = rng.choice(TAG_WORDS[tag]), tag
            else:
                words[i, t] = rng.choice(AMBIGUOUS_WORDS)
                tags[i, t] = RARE if rng.random() < RARE_SHARE else 0
    return words, tags


def tagging_arrays(n_train: int = 400, n_test: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x_train, y_train = sentences(n_train, rng)
    x_test, y_test = sentences(n_test, rng)
    return {
        "x_train": x_train,
        "chars_train": spelling(x_train),
        "y_train": y_train,
        "x_test": x_test,
        "chars_test": spelling(x_test),
        "y_test": y_test,
        "tag_names": np.array(TAG_NAMES),
    }


# word_tag_arrays: a tag's share of the words (and of the vocabulary); "O" is most.
WORD_TAG_SHARE = np.array([0.70, 0.10, 0.07, 0.05, 0.04, 0.03, 0.01])


def word_tag_arrays(
    n_train: int,
    n_test: int,
    *,
    vocabulary: int,
    steps: int,
    chars: int,
    min_length: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """An upload where each word's tag follows from the word: a model that learns the
    vocabulary can be perfect. Words 1..vocabulary each have a tag (a tag's share of the
    vocabulary is WORD_TAG_SHARE's) and a spelling of 3 to `chars` random letters; a
    sentence has min_length..steps words, each tag drawn by its share, then a word of that
    tag; padding to `steps`."""
    rng = np.random.default_rng(seed)
    word_tag = np.concatenate([[-1], rng.choice(7, size=vocabulary, p=WORD_TAG_SHARE)])
    spelled = np.zeros((vocabulary + 1, chars), dtype=np.int32)
    for word in range(1, vocabulary + 1):
        n = int(rng.integers(3, chars + 1))
        spelled[word, :n] = rng.integers(1, 60, n)
    by_tag = [np.flatnonzero(word_tag == tag) for tag in range(7)]

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        tags = rng.choice(7, size=(n, steps), p=WORD_TAG_SHARE)
        words = np.zeros((n, steps), dtype=np.int32)
        for tag in range(7):
            words[tags == tag] = rng.choice(by_tag[tag], size=int((tags == tag).sum()))
        padding = np.arange(steps)[None, :] >= rng.integers(min_length, steps + 1, n)[:, None]
        words[padding], tags[padding] = 0, 0
        return words, tags.astype(np.int32)

    (x_train, y_train), (x_test, y_test) = split(n_train), split(n_test)
    return {
        "x_train": x_train,
        "chars_train": spelled[x_train],
        "y_train": y_train,
        "x_test": x_test,
        "chars_test": spelled[x_test],
        "y_test": y_test,
        "tag_names": np.array(TAG_NAMES),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub wants positional arrays
    return path
