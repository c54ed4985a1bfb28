"""image_folder datasets: `<data root>/<dataset.path>/{train,test}/<class>/<image>`.

- Classes are the sub-folders of train/, sorted by name, as torchvision's
  ImageFolder numbers them; test/ must have the same ones. Images sit directly in
  their class folder. Names starting with "." are skipped (".ipynb_checkpoints",
  ".DS_Store"), and so are files whose suffix is not an image format's.
- Row order, which an inline `sample_weight` follows: class by class, and by file
  name within a class.
- Pixels: decoded with PIL, uint8, channel-first. Every image, train and test,
  must have the same size. If every image is 8-bit grayscale (PIL modes 1, L, LA)
  the dataset has one channel; otherwise three (RGB), grayscale images repeated
  across the channels and any alpha channel dropped. One rule for the whole
  dataset, because a model takes one input shape.
- The data root is a boundary: `dataset.path` must be relative and, once links
  are followed, stay inside the root; so must every split folder, class folder and
  image that is a link (checked before anything in it is listed or opened). A link
  that stays inside the root is followed, at any level. What is not a link lies in
  its folder, which was checked: so every path read is inside the root. A client
  names data, it never reaches outside the root.
- Messages name files relative to the data root, as the client wrote dataset.path
  (service.data.paths); never where the root is on the server.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath

import numpy as np
import numpy.typing as npt
from PIL import Image

from counterweight.service.data.arrays import BaseDataset, Pixels
from counterweight.service.data.paths import without_roots
from counterweight.service.errors import DatasetError

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
SPLITS = ("train", "test")
# Decoded pixels stay in memory for the life of the process; refuse what cannot fit
# instead of dying half-way (CIFAR-10's 60,000 images take 184 MB).
MAX_DECODED_BYTES = 16 * 2**30
DECODE_CHUNK = 1024  # images per task: large enough to amortise, small enough to stop early
DECODE_THREADS = os.cpu_count() or 1
# Errors PIL raises for a file that is not a readable image.
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def locate(data_root: Path, relative: str) -> Path:
    """The folder `dataset.path` names, resolved; refuses paths that leave the data root."""
    if PurePath(relative).is_absolute():
        raise DatasetError(
            f"dataset.path: {relative!r} is absolute and leaves the data root; "
            "give a folder relative to the data root"
        )
    root = data_root.resolve()
    folder = _resolve(root / relative, repr(relative))
    if not folder.is_relative_to(root):
        raise DatasetError(f"dataset.path: {relative!r} leaves the data root")
    try:
        is_folder = folder.is_dir()
    except OSError as exc:
        raise _cannot_look_up(repr(relative), exc) from exc
    if not is_folder:
        raise DatasetError(f"dataset.path: {relative!r} is not a folder under the data root")
    # Before content_version lists them, and read_image_folder reads them.
    for split in SPLITS:
        _refuse_link_out(folder / split, root, str(PurePath(relative) / split))
    return folder


def _refuse_link_out(path: Path, root: Path, shown: str) -> None:
    """DatasetError if `path`, links followed, lies outside `root` (the resolved root)."""
    if not _resolve(path, shown).is_relative_to(root):
        raise DatasetError(f"dataset.path: {shown} is a link that leaves the data root")


def _resolve(path: Path, shown: str) -> Path:
    """`path`, links followed; DatasetError where that cannot be done."""
    try:
        return path.resolve()
    except RuntimeError as exc:  # how Python before 3.13 reports a link loop
        raise DatasetError(f"dataset.path: {shown} is a link loop") from exc
    except OSError as exc:
        raise _cannot_look_up(shown, exc) from exc


def _cannot_look_up(shown: str, exc: OSError) -> DatasetError:
    # A name too long for the file system, a link loop: a 422, not a 500. strerror, as
    # the message itself names the path as opened, absolute.
    if exc.errno == errno.ELOOP:
        return DatasetError(f"dataset.path: {shown} is a link loop")
    return DatasetError(f"dataset.path: {shown} cannot be looked up: {exc.strerror}")


def content_version(folder: Path) -> tuple[int, ...]:
    """Modification times of the folder, its splits and class folders: adding, removing or
    renaming an image changes one of them. (An image rewritten in place does not.)"""
    stamps = [folder.stat().st_mtime_ns]
    for split in SPLITS:
        directory = folder / split
        if directory.is_dir():
            stamps.append(directory.stat().st_mtime_ns)
            stamps += [e.stat().st_mtime_ns for e in os.scandir(directory) if e.is_dir()]
    return tuple(stamps)


def read_image_folder(data_root: Path, relative: str) -> BaseDataset:
    """Decode the folder `dataset.path` names into a dataset; raises DatasetError."""
    folder = locate(data_root, relative)
    reader = _FolderReader(folder, data_root.resolve(), relative)
    listings = {split: reader.classes(split) for split in SPLITS}
    names = sorted(listings["train"])
    if not names:
        raise DatasetError(
            f"dataset.path: {reader.show(folder / 'train')} has no class folders; expected "
            "train/<class>/<images> and test/<class>/<images>"
        )
    if set(names) != set(listings["test"]):
        only_train = sorted(set(names) - set(listings["test"]))
        only_test = sorted(set(listings["test"]) - set(names))
        raise DatasetError(
            f"dataset.path: train/ and test/ of {relative!r} must hold the same class folders; "
            f"only in train/: {only_train}, only in test/: {only_test}"
        )
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for label, name in enumerate(names):
            images = reader.images(listings[split][name])
            files[split] += images
            labels[split] += [label] * len(images)
    pixels = reader.decode(files["train"] + files["test"])
    n_train = len(files["train"])
    return BaseDataset(
        x_train=pixels[:n_train],
        y_train=np.asarray(labels["train"], dtype=np.int64),
        x_test=pixels[n_train:],
        y_test=np.asarray(labels["test"], dtype=np.int64),
        class_names=names,
    )


class _FolderReader:
    """Lists and decodes one image folder, checking every link against the data root."""

    def __init__(self, folder: Path, root: Path, relative: str) -> None:
        self.folder, self.root, self.relative = folder, root, relative

    def show(self, path: Path) -> str:
        """How messages name a path: as the client wrote it, dataset.path first."""
        return str(PurePath(self.relative) / path.relative_to(self.folder))

    def _visible(self, directory: Path) -> list[os.DirEntry[str]]:
        entries = sorted(
            (e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name
        )
        for entry in entries:
            if entry.is_symlink():
                _refuse_link_out(Path(entry.path), self.root, self.show(Path(entry.path)))
        return entries

    def classes(self, split: str) -> dict[str, Path]:
        directory = self.folder / split
        if not directory.is_dir():
            raise DatasetError(
                f"dataset.path: {self.relative!r} has no {split}/ folder; expected "
                "train/<class>/<images> and test/<class>/<images>"
            )
        return {e.name: Path(e.path) for e in self._visible(directory) if e.is_dir()}

    def images(self, class_folder: Path) -> list[Path]:
        images = [
            Path(e.path)
            for e in self._visible(class_folder)
            if e.is_file() and PurePath(e.name).suffix.lower() in IMAGE_SUFFIXES
        ]
        if not images:
            raise DatasetError(
                f"dataset.path: {self.show(class_folder)} holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return images

    def _pixels(self, path: Path) -> npt.NDArray[np.uint8]:
        """(H, W) for an 8-bit grayscale image, (H, W, 3) for any other."""
        try:
            with Image.open(path) as image:
                if image.mode in GRAYSCALE_MODES:
                    return np.asarray(image if image.mode == "L" else image.convert("L"))
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        except _UNREADABLE as exc:
            # PIL's message names the file as opened, under the root: name it relative.
            reason = without_roots(str(exc), self.root)
            raise DatasetError(f"dataset.path: cannot decode {self.show(path)}: {reason}") from exc

    def decode(self, files: list[Path]) -> Pixels:
        """(n, C, H, W) uint8 for `files`, in order; C is 1 if every image is grayscale."""
        first = self._pixels(files[0])
        height, width = first.shape[:2]
        size = len(files) * 3 * height * width
        if size > MAX_DECODED_BYTES:
            raise DatasetError(
                f"dataset.path: {len(files)} images of {width}x{height} take {size} bytes "
                f"decoded; the limit is {MAX_DECODED_BYTES}"
            )
        out = np.empty((len(files), 3, height, width), dtype=np.uint8)
        gray = np.zeros(len(files), dtype=bool)

        def decode_chunk(start: int) -> None:
            for i in range(start, min(start + DECODE_CHUNK, len(files))):
                pixels = first if i == 0 else self._pixels(files[i])
                if pixels.shape[:2] != (height, width):
                    raise DatasetError(
                        f"dataset.path: every image must have the same size; "
                        f"{self.show(files[i])} is {pixels.shape[1]}x{pixels.shape[0]} but "
                        f"{self.show(files[0])} is {width}x{height}"
                    )
                if pixels.ndim == 2:
                    out[i] = pixels  # broadcast over the three channels
                    gray[i] = True
                else:
                    out[i] = pixels.transpose(2, 0, 1)

        # PIL releases the GIL while it decodes, so threads help where decoding dominates
        # (large images, free cores). For CIFAR's 32x32 JPEGs Python's per-file work
        # dominates (~90% of the time), and threads neither help nor hurt: 50,000 take
        # 9-15 s either way on a busy 2-core machine. The chunks fill disjoint rows of `out`.
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            tasks = [pool.submit(decode_chunk, s) for s in range(0, len(files), DECODE_CHUNK)]
            try:
                for task in tasks:
                    task.result()
            finally:  # the first error (in file order) wins; the rest need not run
                for task in tasks:
                    task.cancel()
        return np.ascontiguousarray(out[:, :1]) if gray.all() else out
