"""The worker program: `python -m workers [--device D]`, what `counterweight worker`
runs. Claims jobs from the queue and trains them until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from service.logs import configure_logging
from service.settings import Settings
from workers.worker import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="counterweight worker", description=__doc__)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    args = parser.parse_args(argv)
    try:
        configure_logging()  # COUNTERWEIGHT_LOG_LEVEL, COUNTERWEIGHT_LOG_FORMAT (text | json)
    except ValueError as exc:
        print(f"counterweight: {exc}", file=sys.stderr)
        return 2
    run_worker(Settings(), args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
