"""mailwarden-runtime."""
