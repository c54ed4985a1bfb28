"""Webhooks: signing, the addresses a delivery may reach, the sender and the dispatcher
loop that turns the job-events outbox into deliveries (DESIGN.md section 3)."""
