"""Request-scoped access to settings and database sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


SettingsDep = Annotated[Settings, Depends(_settings)]
# Routes open their own transaction (service.db.engine.transaction) so that the
# commit happens before the response is sent: a 202 always means a stored job.
SessionsDep = Annotated[sessionmaker[Session], Depends(_sessions)]
