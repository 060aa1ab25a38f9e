"""One probe per protocol, all on :mod:`mailwarden_mailnet.wire` and the shared connect flow in ``base``."""
