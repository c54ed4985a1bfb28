"""The dispatcher: a thread in each API process that delivers webhooks.

Each round it turns pending job events into deliveries (service.store.webhooks.outbox),
then leases the due deliveries and sends them on a small pool of threads
(COUNTERWEIGHT_WEBHOOK_CONCURRENCY), recording each attempt. It runs beside the event
loop, never on it, so requests do not wait for receivers; its database work is a few
short transactions a round. Any number of API processes, on any number of hosts, may
run one: deliveries are leased, so each is sent by one at a time, and a dispatcher
killed mid-delivery leaves a lease that expires, after which another sends it again
(at least once: a receiver dedupes by the `Counterweight-Delivery` id).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.settings import Settings
from counterweight.service.store.availability import describe_failure
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.models import new_job_id
from counterweight.service.store.webhooks.deliveries import (
    Claimed,
    claim_due,
    record_attempt,
    work_waiting,
)
from counterweight.service.store.webhooks.outbox import fan_out
from counterweight.service.webhooks.sender import send

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 200
# A lease outlasts an attempt (its timeout) with room to record it: a live dispatcher's
# delivery is not taken over, a dead one's is within this.
LEASE_MARGIN_SECONDS = 5.0


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions
        self.id = f"dispatcher-{new_job_id()[:12]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, "webhook-send")
        self.lease_seconds = 2 * settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish (each within its timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        log.info("webhook dispatcher %s started", self.id)
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once()
            except SQLAlchemyError as exc:  # a database outage must not end deliveries
                log.warning("webhook dispatcher: %s; retrying", describe_failure(exc))
            except Exception:
                log.exception("webhook dispatcher: round failed; retrying")
            if not busy:
                self._stop.wait(self._settings.webhook_poll_seconds)

    def run_once(self) -> bool:
        """One round: fan out, then send what is due. Whether there was work."""
        with read_only(self._sessions) as session:
            if not work_waiting(session):
                return False
        with transaction(self._sessions) as session:
            events = fan_out(session, limit=FAN_OUT_BATCH, public_url=self._settings.public_url)
        with transaction(self._sessions) as session:
            claimed = claim_due(
                session,
                owner=self.id,
                lease_seconds=self.lease_seconds,
                limit=self._settings.webhook_concurrency,
            )
        for _ in self._pool.map(self._deliver, claimed):
            pass
        return events > 0 or bool(claimed)

    def _deliver(self, delivery: Claimed) -> None:
        settings = self._settings
        outcome = send(
            delivery,
            allowed=settings.webhook_networks,
            timeout=settings.webhook_timeout_seconds,
        )
        try:
            with transaction(self._sessions) as session:
                row = record_attempt(
                    session,
                    delivery.id,
                    owner=self.id,
                    attempt=delivery.attempt,
                    outcome=outcome,
                    backoff_seconds=settings.webhook_backoff_seconds,
                    retry_seconds=settings.webhook_retry_seconds,
                )
        except SQLAlchemyError as exc:  # unrecorded: the lease expires, it is sent again
            log.warning("delivery %s: not recorded (%s)", delivery.id, describe_failure(exc))
            return
        if row is None:
            log.info("delivery %s: taken over or cancelled meanwhile", delivery.id)
        elif not outcome.delivered:
            log.info(
                "delivery %s attempt %d to %s failed (%s); now %s",
                delivery.id,
                delivery.attempt,
                delivery.url,
                outcome.error,
                row.state.value,
            )
