"""The worker process: claims jobs from the queue, trains them, reports back.

worker.py (the loop: claim, train, record), heartbeat.py (lease renewal, progress
out, cancel in) and plots.py build on service's store, storage, data and rebalance;
training/ builds on data and rebalance alone and never touches the database, the
artifact store or the API. `python -m counterweight.workers` runs one worker
(__main__.py).
"""
