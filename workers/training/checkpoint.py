"""Files a job writes to its workdir, each written atomically.

- checkpoint.pt: everything needed to resume (see loop.TrainState); plain
  tensors and containers only, so it loads with `weights_only=True`.
- model.safetensors: the selected model's state dict.
- card.json: how to rebuild and use that model (models.model_from_card).

A file is written to a temporary name in the same directory, synced, then
renamed over the old one: a crash leaves either the old file or the new one,
never half of one.

The engine only knows its workdir. A worker that wants each checkpoint copied
elsewhere as soon as it is written (the artifact store, so that another host
can resume the job) says so with `mirrored(workdir, copy)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from counterweight.service.artifacts import CARD as CARD_FILE
from counterweight.service.artifacts import CHECKPOINT as CHECKPOINT_FILE
from counterweight.service.artifacts import MODEL as MODEL_FILE
from counterweight.workers.training.models import Classifier, model_from_card


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# workdir -> what to do with each checkpoint written there (see `mirrored`).
_mirrors: dict[Path, Callable[[Path], None]] = {}


@contextmanager
def mirrored(workdir: Path, copy: Callable[[Path], None]) -> Iterator[None]:
    """Inside the block, `copy(path)` runs after each checkpoint written to `workdir`,
    before save_checkpoint returns: a job stopped after its final checkpoint has it
    copied by the time the worker gives the job back."""
    _mirrors[workdir] = copy
    try:
        yield
    finally:
        del _mirrors[workdir]


def save_checkpoint(workdir: Path, state: dict[str, Any]) -> None:
    path = workdir / CHECKPOINT_FILE
    atomic_write(path, lambda f: torch.save(state, f))
    copy = _mirrors.get(workdir)
    if copy is not None:
        copy(path)


def load_checkpoint(workdir: Path) -> dict[str, Any] | None:
    """The last checkpoint, or None if there is none. Tensors load on the CPU whatever
    device wrote them (the job may resume elsewhere); load_state_dict moves them. On the
    GPU, the optimizer's step counts would land on it too, and make Adam sync every step."""
    path = workdir / CHECKPOINT_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def save_model(workdir: Path, state_dict: dict[str, Tensor], card: dict[str, Any]) -> None:
    """Weights first, card last: a card on disk means its weights are there too."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items()}
    atomic_write(workdir / MODEL_FILE, lambda f: f.write(save_safetensors(tensors)))
    atomic_write(workdir / CARD_FILE, lambda f: f.write(json.dumps(card, indent=2).encode()))


def load_model(workdir: Path, device: str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The trained model (in eval mode, on `device`) and its card."""
    card: dict[str, Any] = json.loads((workdir / CARD_FILE).read_text())
    model = model_from_card(card)
    model.load_state_dict(load_safetensors((workdir / MODEL_FILE).read_bytes()))
    return model.to(device).eval(), card
