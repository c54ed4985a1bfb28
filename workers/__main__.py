"""The worker program: `python -m counterweight.workers [--device D]`, which
`counterweight worker` runs. Claims jobs from the queue and trains them until
SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

# 128 + SIGINT, the shell's code for a program ended by Ctrl-C: the worker's while it is
# still starting (importing torch takes seconds); once running, Ctrl-C is its signal to
# checkpoint, re-queue its job and exit 0 (workers.worker).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="counterweight worker", description=__doc__)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    args = parser.parse_args(argv)
    try:
        return _run(args.device)
    except KeyboardInterrupt:
        return INTERRUPTED


def _run(device: str | None) -> int:
    # Imported here, where a Ctrl-C during the imports is answered quietly.
    from counterweight.service.errors import DatabaseUnavailable
    from counterweight.service.logs import configure_logging
    from counterweight.service.settings import Settings
    from counterweight.workers.worker import run_worker

    try:
        configure_logging()  # COUNTERWEIGHT_LOG_LEVEL, COUNTERWEIGHT_LOG_FORMAT (text | json)
    except ValueError as exc:  # before logging exists: say it plainly
        sys.stderr.write(f"counterweight: {exc}\n")
        return 2
    try:
        run_worker(Settings(), device)
    except DatabaseUnavailable as exc:  # e.g. the SQLite file missing at start-up
        sys.stderr.write(f"counterweight: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
