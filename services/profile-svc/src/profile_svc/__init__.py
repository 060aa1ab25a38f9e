"""profile-svc."""
