"""Re-balancing maths on a job's class counts: class and sample weights, the losses'
per-class terms, and the plan `POST /v1/jobs/validate` shows (counts, effective
weights, warnings). numpy only: it reads no data and no database.
"""
