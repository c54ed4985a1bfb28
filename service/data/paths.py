"""How answers name the server's files: relative to the data root (or, for uploads and a
job's files, the home), never absolute.

Where the data root and the home lie on the server is the operator's business, and
their absolute paths would tell a client about the host's layout (user names, mounts).
Messages name a file as a client names it in a spec (`pets/train/cat/001.png`); the
logs keep absolute paths. Messages this service writes build their paths relative in
the first place; `without_roots` is for text it did not write, an exception's message,
which names a file as it was opened (`cannot identify image file '/srv/data/...'`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def _spellings(root: Path) -> list[str]:
    """The ways `root` can appear in a path the process opened, longest first."""
    forms = {str(root), str(root.absolute()), str(root.resolve())}
    return sorted((form.rstrip(os.sep) for form in forms if form.strip(os.sep)), key=len)[::-1]


def without_roots(text: str, *roots: Path) -> str:
    """`text` with every path under one of `roots` written relative to it (and a root
    itself as `.`)."""
    for root in roots:
        for form in _spellings(root):
            # The root, then a separator (a path under it) or the end of the path: a
            # sibling that merely starts with the same characters (/srv/data2) stays.
            pattern = re.escape(form) + r"(" + re.escape(os.sep) + r"|(?![\w.-]))"
            text = re.sub(pattern, lambda m: "" if m.group(1) else ".", text)
    return text
