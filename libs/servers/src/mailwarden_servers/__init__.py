"""mailwarden-servers."""
