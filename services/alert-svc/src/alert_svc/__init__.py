"""alert-svc."""
