"""The job queue on SQLite or Postgres, one module per concept (DESIGN.md section 2).

Every function takes a Session and flushes; the caller owns the commit. Every
update a worker makes names the job, its owner and its attempt, and takes
effect only while that worker still holds the lease.
"""
