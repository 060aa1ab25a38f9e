"""tester-svc."""
