"""The worker process: claims jobs from the queue, trains them, reports back."""
