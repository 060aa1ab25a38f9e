"""One probe per protocol, all on :mod:`tester_svc.wire` and the shared connect flow in ``base``."""
