"""Webhook rows: subscriptions and secrets, the outbox's fan-out of job events into
deliveries, and the deliveries' leases and attempts (DESIGN.md section 3, "Webhooks")."""
