"""A real file system that fails on demand: ext4 in a file, loop-mounted (root only).

`fail()` makes the kernel report an ext4 error (sysfs `trigger_fs_error`); mounted
with `errors=remount-ro`, the file system goes read-only at once, with files open
for writing (which `mount -o remount,ro` would refuse), and its journal is aborted:
what was not on disk yet never gets there, as after a crash. `recover()` is the
operator's way back: unmount, `e2fsck -fy`, mount again.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def can_mount() -> bool:
    """Loop mounts need root (CI runs as root)."""
    return os.geteuid() == 0


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 and command[0] != "e2fsck":  # e2fsck: 1 = errors corrected
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


class Ext4Image:
    def __init__(self, root: Path, *, size_mb: int = 256) -> None:
        self.image = root / "ext4.img"
        self.mountpoint = root / "mnt"
        self.size_mb = size_mb

    def mount(self) -> Path:
        """Make the file system (first time) and mount it; returns the mount point."""
        if not self.image.exists():
            with self.image.open("wb") as image:
                image.truncate(self.size_mb * 2**20)
            _run("mkfs.ext4", "-q", "-F", str(self.image))
        self.mountpoint.mkdir(exist_ok=True)
        _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint))
        return self.mountpoint

    def fail(self) -> None:
        """An ext4 error: the file system turns read-only now, its journal aborted."""
        device = Path(_run("findmnt", "-n", "-o", "SOURCE", str(self.mountpoint))).name
        Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("counterweight test\n")
        options = _run("findmnt", "-n", "-o", "OPTIONS", str(self.mountpoint)).split(",")
        assert "ro" in options or "emergency_ro" in options, options

    def unmount(self) -> None:
        _run("umount", str(self.mountpoint))

    def recover(self) -> Path:
        """What an operator does once the processes using it are stopped: unmount,
        check (the journal is replayed, the error cleared), mount again read-write."""
        self.unmount()
        _run("e2fsck", "-fy", str(self.image))
        return self.mount()
