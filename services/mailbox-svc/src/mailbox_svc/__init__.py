"""mailbox-svc."""
