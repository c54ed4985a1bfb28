"""The database: models, engines, the job queue (one module per concept), and the rows
of uploads, sweeps and API keys. Every function takes a Session and flushes; the
caller owns the commit.
"""
