"""mailwarden console: the administrators web screens."""
