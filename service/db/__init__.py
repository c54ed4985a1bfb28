"""Database models, engine set-up and migrations, shared by the API and the worker."""
