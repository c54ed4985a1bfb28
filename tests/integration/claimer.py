"""A worker stand-in for the conformance test: claim and finish until the queue is empty.

Run as a script so that each claimer is its own process with its own connections.
Prints the ids it claimed, one per line.
"""

from __future__ import annotations

import sys

from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish


def main(url: str, worker_id: str) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    while True:
        with transaction(sessions) as session:
            job = claim(session, worker_id=worker_id, lease_seconds=60)
            if job is None:
                break
            finish(session, Lease.of(job), result={"by": worker_id})
        print(job.id, flush=True)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
