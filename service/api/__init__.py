"""The HTTP API (FastAPI). Accepts, validates, stores, serves; never trains."""
