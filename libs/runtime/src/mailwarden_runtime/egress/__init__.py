"""The one egress policy of every outbound connection, and outbound HTTP under it.

It lives in the runtime so that everything may use it: the mail clients (``mailwarden_mailnet``
re-exports it), webhooks, and the identity provider's JWKS fetch of :mod:`mailwarden_runtime.auth`.

- :mod:`.policy`: denied ranges, hidden IPv4 in IPv6, the operator's allow-list, ports.
- :mod:`.resolve`: name resolution once per connection, with a deadline and coded failures.
- :mod:`.admit`: the two together: a name and port to the addresses a connection may go to.
- :mod:`.http`: HTTP to a checked address only (pinned, no redirects, one deadline, a body cap,
  per-host limits).
- :mod:`.errors`: :class:`~.errors.NetError`, the classified failure all of them raise.
"""
