"""The sequence labeling model, bilstm_tagger: word embeddings, a character CNN and a
BiLSTM, with the classifiers' heads (workers.training.models.classifier_head). Its
keyword arguments come from service.architectures.tagger_kwargs and its parameter count
from count_tagger_parameters there; a card rebuilds it with `tagger_from_card`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from counterweight.workers.training.models import classifier_head

EMBEDDING_INIT = 0.05


def embedding(num: int, dim: int) -> nn.Embedding:
    """An embedding table with id 0 as padding (a zero row that never trains), its other
    rows drawn uniform in [-0.05, 0.05], as Keras's Embedding does, not N(0, 1) as
    PyTorch's. Adam moves a coordinate by about lr (1e-3) per update, and a word is updated
    only in the batches that hold it: against N(0, 1) rows a few epochs barely move a word
    away from its random start, and the tagger must tell 10,000 random vectors apart; from
    small rows the updates soon dominate and each word's vector points to its tag. On
    issue 16's task this alone takes macro F1 after 5 epochs from 0.61 to 1.00
    (BENCHMARKS.md, "Sequence labeling")."""
    table = nn.Embedding(num, dim, padding_idx=0)
    with torch.no_grad():
        table.weight.uniform_(-EMBEDDING_INIT, EMBEDDING_INIT)
        table.weight[0].zero_()
    return table


class CharEncoder(nn.Module):
    """A word from its characters: character embeddings, a width-3 convolution and a max
    over the word's characters (Ma and Hovy 2016, "End-to-end Sequence Labeling via
    Bi-directional LSTM-CNNs-CRF", section 2.1). Padding characters (id 0) embed to zero,
    as the convolution's own padding does, and are left out of the max: a word encodes the
    same however much padding follows it."""

    def __init__(self, char_vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = embedding(char_vocab_size, dim)
        self.conv = nn.Conv1d(dim, 2 * dim, kernel_size=3, padding=1)
        self.out_features = 2 * dim

    def forward(self, chars: Tensor, words: Tensor | None = None) -> Tensor:
        """(n, T, C) character ids -> (n, T, out_features). With `words` (n, T), a mask of
        the steps that hold a word, only those are encoded (the convolution is most of the
        cost, and padding steps can be half the batch); the others encode as zeros."""
        n, steps, width = chars.shape
        flat = chars.reshape(n * steps, width)
        if words is not None:
            flat = flat[words.reshape(-1)]
        features = self.conv(self.embed(flat).transpose(1, 2))  # (words, 2*dim, C)
        real = (flat != 0).unsqueeze(1)
        pooled = features.masked_fill(~real, -torch.inf).amax(dim=2)
        # A word without characters (and every padding step) encodes as zeros.
        pooled = torch.where(real.any(dim=2), pooled, torch.zeros_like(pooled))
        if words is None:
            return pooled.reshape(n, steps, self.out_features)
        out = pooled.new_zeros(n, steps, self.out_features)
        out[words] = pooled
        return out


def reverse_within(lengths: Tensor, steps: int) -> Tensor:
    """(n, steps) indices that reverse each sentence's first `length` steps and leave its
    padding in place: gathering with them twice gives back the input."""
    t = torch.arange(steps, device=lengths.device)
    lengths = lengths.unsqueeze(1)
    return torch.where(t < lengths, lengths - 1 - t, t)


class BiLSTMTagger(nn.Module):
    """Word embeddings (plus a CharEncoder when the data has characters), a bidirectional
    LSTM and a head per step, linear or LDAM's cosine head (Lample et al. 2016 without the
    CRF): word ids (n, T), 0 = padding after the words, -> tag logits (n, T, num_classes).
    The logits at padding steps are meaningless and every caller masks them out.

    The LSTM reads each sentence as packed sequences would, without pack_padded_sequence
    (several times slower on the CPU than the LSTM over the padded batch): the forward
    direction runs over the padded batch, which is exact at the words since padding comes
    after them; the backward direction runs forward over each sentence reversed within its
    own length, its padding still after it, and its outputs are reversed back. The weights
    are those of one bidirectional nn.LSTM (`lstm`), as in a packed model's state dict."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        char_vocab_size: int = 0,
        embedding_dim: int = 64,
        char_embedding_dim: int = 16,
        hidden_size: int = 100,
        layers: int = 1,
        head: str = "linear",
        head_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.words = embedding(vocab_size, embedding_dim)
        self.chars = CharEncoder(char_vocab_size, char_embedding_dim) if char_vocab_size else None
        features = embedding_dim + (self.chars.out_features if self.chars else 0)
        self.lstm = nn.LSTM(
            features, hidden_size, num_layers=layers, batch_first=True, bidirectional=True
        )
        self.classify = classifier_head(2 * hidden_size, num_classes, head, head_scale)

    def __call__(self, words: Tensor, chars: Tensor | None = None) -> Tensor:
        out: Tensor = super().__call__(words, chars)
        return out

    def forward(self, words: Tensor, chars: Tensor | None = None) -> Tensor:
        real = words != 0
        x = self.words(words)
        if self.chars is not None:
            if chars is None:
                raise ValueError("this tagger was trained with characters: pass chars")
            x = torch.cat([x, self.chars(chars, real)], dim=2)
        reverse = reverse_within(real.sum(dim=1), words.shape[1]).unsqueeze(2)
        for layer in range(self.lstm.num_layers):
            forward = self._direction(x, layer, "")
            backward = self._direction(x.gather(1, reverse.expand_as(x)), layer, "_reverse")
            x = torch.cat([forward, backward.gather(1, reverse.expand_as(backward))], dim=2)
        logits: Tensor = self.classify(x)
        return logits

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One direction of one layer of `lstm` over x (n, T, features), from zero state."""
        weights = [
            getattr(self.lstm, f"{name}_l{layer}{suffix}")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        zeros = x.new_zeros(1, x.shape[0], self.lstm.hidden_size)
        # torch.lstm is what nn.LSTM runs (its _VF.lstm), here with one direction's weights.
        out: Tensor = torch.lstm(
            x, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True
        )[0]
        return out


def tagger_from_card(card: dict[str, Any]) -> BiLSTMTagger:
    """A bilstm_tagger card's model with untrained weights; load the safetensors file into
    it. (model_from_card is for the classifiers.)"""
    return BiLSTMTagger(**card["model_kwargs"])
