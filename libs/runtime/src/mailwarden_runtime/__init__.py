"""Shared runtime of mailwarden's services: bus, database, outbox, consumers, crypto, HTTP."""
