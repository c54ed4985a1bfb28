"""Alembic migrations, installed as counterweight.migrations: service.store.engine.upgrade
runs them (env.py, versions/)."""
