"""Talking to customer mail servers safely, shared by tester-svc and sync-svc (and webhooks).

- :mod:`~mailwarden_mailnet.policy`: the egress policy (denied ranges, operator allow-list, ports),
  re-exported from :mod:`mailwarden_runtime.egress`, where it is implemented once for every
  outbound connection (the runtime's JWKS fetch included).
- :mod:`~mailwarden_mailnet.resolve`: name resolution with a deadline and coded failures (ditto).
- :mod:`~mailwarden_mailnet.tls`: TLS client contexts, certificate facts, handshake errors.
- :mod:`~mailwarden_mailnet.wire`: a capped line connection to the checked address only.
- :mod:`~mailwarden_mailnet.http_egress`: outbound HTTP (webhooks) under the same policy, pinned to
  the checked address, with a deadline, a body cap and per-host limits (ditto).
- :mod:`~mailwarden_mailnet.imap`, :mod:`~mailwarden_mailnet.pop3`: protocol clients on the wire.
- :mod:`~mailwarden_mailnet.classify`: failures → error catalog codes.
- :mod:`~mailwarden_mailnet.login`: sealed transit logins, opened at the last moment.
"""
