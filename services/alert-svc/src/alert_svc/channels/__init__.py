"""Notification channels (email digests, webhooks), each driven from its own durable queue.

A channel that is down only lets its own queue grow; the wall and the alert subjects do not wait.
"""
