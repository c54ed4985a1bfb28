"""`counterweight keys create|list|revoke`, and the start-up rule for running without keys.

Keys are managed on the database directly, not over HTTP: whoever can reach the
database is the operator, and a service with no keys yet has no admin to ask.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import sys

from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import KeyNotFound
from counterweight.service.settings import Settings
from counterweight.service.store.engine import (
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from counterweight.service.store.keys import (
    TENANT_PATTERN,
    create_key,
    keys_exist,
    list_keys,
    revoke_key,
)

log = logging.getLogger("counterweight")


def _sessions(settings: Settings) -> sessionmaker[Session]:
    upgrade(settings.resolved_database_url)
    return make_session_factory(make_engine(settings.resolved_database_url))


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def refuse_open_mode(settings: Settings, host: str, *, warn: bool = True) -> bool:
    """Whether to refuse to start: no API key exists and `host` is not a loopback
    address. On loopback without keys the service runs open, and says so (`warn`)."""
    sessions = _sessions(settings)
    with transaction(sessions) as session:
        exist = keys_exist(session)
    if exist:
        return False
    if not is_loopback(host):
        print(
            f"counterweight: refusing to serve on {host} without API keys: anyone who reaches "
            "it could run and read every job. Create one first (counterweight keys create "
            "--tenant NAME), or bind to 127.0.0.1",
            file=sys.stderr,
        )
        return True
    if warn:
        log.warning(
            "no API keys: the service runs OPEN on %s (loopback only); every caller is tenant "
            "'default' with admin rights. `counterweight keys create --tenant NAME` turns "
            "auth on",
            host,
        )
    return False


def _tenant(value: str) -> str:
    if not re.fullmatch(TENANT_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def cmd_create(args: argparse.Namespace) -> int:
    with transaction(_sessions(Settings())) as session:
        row, key = create_key(session, args.tenant, is_admin=args.admin)
        role = "admin key" if row.is_admin else "key"
        summary = f"{role} {row.id} for tenant {row.tenant!r}"
    print(key)  # alone on stdout, for scripts: KEY=$(counterweight keys create ...)
    print(f"created {summary}; the key is shown only this once", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with transaction(_sessions(Settings())) as session:
        for row in list_keys(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            role = "admin" if row.is_admin else "tenant"
            print(f"{row.id}  {row.prefix}...  {row.tenant:<20} {role:<6}  {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        with transaction(_sessions(Settings())) as session:
            revoke_key(session, args.id)
    except KeyNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"revoked key {args.id}; the API stops accepting it within COUNTERWEIGHT_AUTH_CACHE_SECONDS"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key for a tenant; prints it once")
    create.add_argument("--tenant", required=True, type=_tenant)
    create.add_argument("--admin", action="store_true", help="sees every tenant's jobs")
    create.set_defaults(func=cmd_create)
    keys_sub.add_parser("list", help="every key: id, prefix, tenant, state").set_defaults(
        func=cmd_list
    )
    revoke = keys_sub.add_parser("revoke", help="stop accepting a key")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_revoke)
