"""The error catalog: every failure a test can end in, with what it means and what to do.

Codes are stable API. Whether a code is transient decides retry-or-disable in mailbox-svc; its
scope decides who is alerted (a profile-scope error is the profile owner's to fix).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

ErrorScope = Literal["mailbox", "profile"]


class ErrorCode(StrEnum):
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_TIMEOUT = "dns_timeout"
    DNS_FAILURE = "dns_failure"
    PORT_NOT_ALLOWED = "port_not_allowed"
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    TCP_REFUSED = "tcp_refused"
    TCP_TIMEOUT = "tcp_timeout"
    TCP_UNREACHABLE = "tcp_unreachable"
    GREETING_TIMEOUT = "greeting_timeout"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_VERSION_TOO_OLD = "tls_version_too_old"
    TLS_PROTOCOL_ERROR = "tls_protocol_error"
    CERT_UNTRUSTED = "cert_untrusted"
    CERT_EXPIRED = "cert_expired"
    CERT_HOSTNAME_MISMATCH = "cert_hostname_mismatch"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    STARTTLS_REFUSED = "starttls_refused"
    PLAINTEXT_NOT_ALLOWED = "plaintext_not_allowed"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    PROTOCOL_VIOLATION = "protocol_violation"
    RESPONSE_TOO_LONG = "response_too_long"
    CONNECTION_LOST = "connection_lost"
    STEP_TIMEOUT = "step_timeout"
    AUTH_FAILED = "auth_failed"
    AUTH_MECHANISM_UNSUPPORTED = "auth_mechanism_unsupported"
    AUTH_TEMPORARY = "auth_temporary"
    ACCOUNT_IN_USE = "account_in_use"
    SERVER_TEMPORARY_ERROR = "server_temporary_error"
    SERVER_PERMANENT_ERROR = "server_permanent_error"
    INBOX_UNAVAILABLE = "inbox_unavailable"
    SENDER_REFUSED = "sender_refused"
    RECIPIENT_REFUSED = "recipient_refused"
    CREDENTIALS_MISSING = "credentials_missing"
    CREDENTIALS_UNREADABLE = "credentials_unreadable"
    AUTH_BREAKER_OPEN = "auth_breaker_open"
    MAILBOX_NOT_APPROVED = "mailbox_not_approved"
    TEST_TIMEOUT = "test_timeout"
    NO_RESULT = "no_result"
    OUTGOING_NOT_ENABLED = "outgoing_not_enabled"
    MESSAGE_TOO_LARGE = "message_too_large"
    MESSAGE_REFUSED = "message_refused"
    SMTPUTF8_UNSUPPORTED = "smtputf8_unsupported"
    ATTACHMENT_UNAVAILABLE = "attachment_unavailable"
    INTERNAL_ERROR = "internal_error"


class WarningCode(StrEnum):
    CERT_EXPIRING_SOON = "cert_expiring_soon"
    PLAINTEXT_LOGIN_OFFERED = "plaintext_login_offered"
    WEAK_TLS = "weak_tls"
    TLS_VERIFICATION_DISABLED = "tls_verification_disabled"


class ErrorSpec(BaseModel):
    """What one code means, for people and for the retry policy."""

    model_config = ConfigDict(frozen=True)

    transient: bool
    scope: ErrorScope
    message: str
    remediation: str


def _spec(transient: bool, scope: ErrorScope, message: str, remediation: str) -> ErrorSpec:
    return ErrorSpec(transient=transient, scope=scope, message=message, remediation=remediation)


T, P = True, False  # transient, permanent
CATALOG: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.DNS_NXDOMAIN: _spec(
        P,
        "profile",
        "The server name does not exist in DNS.",
        "Check the server location in the email server profile.",
    ),
    ErrorCode.DNS_TIMEOUT: _spec(
        T,
        "profile",
        "The DNS lookup of the server name timed out.",
        "Retry later; if it persists, check the resolver.",
    ),
    ErrorCode.DNS_FAILURE: _spec(
        T,
        "profile",
        "The server name could not be resolved.",
        "Check the server location and the DNS service.",
    ),
    ErrorCode.PORT_NOT_ALLOWED: _spec(
        P,
        "profile",
        "The server port is not in the allowed list.",
        "Use an allowed port (e.g. IMAPS 993, POP3S 995, SMTP 465/587), or add this port to the"
        " organisation's allowed ports (email settings `port_preset` custom and `allowed_ports`:"
        " `mailwarden settings set --allowed-ports ...`).",
    ),
    ErrorCode.ADDRESS_NOT_ALLOWED: _spec(
        P,
        "profile",
        "The server address is not allowed by the egress policy.",
        "Use a public server. For an on-premises server on a private or loopback address, an operator"
        " adds its range to `MW_TESTER_ALLOW_NETWORKS` (tester-svc, CIDRs, e.g. 10.20.0.0/16).",
    ),
    ErrorCode.TCP_REFUSED: _spec(
        T,
        "profile",
        "The server refused the connection.",
        "Check the host and port, and that the server is running.",
    ),
    ErrorCode.TCP_TIMEOUT: _spec(
        T,
        "profile",
        "The connection to the server timed out.",
        "Check the host, port and firewalls between us and the server.",
    ),
    ErrorCode.TCP_UNREACHABLE: _spec(
        T, "profile", "The server's network is unreachable.", "Check the network path to the server."
    ),
    ErrorCode.GREETING_TIMEOUT: _spec(
        T,
        "profile",
        "The server did not greet in time.",
        "Check that the port serves this protocol and TLS mode.",
    ),
    ErrorCode.TLS_HANDSHAKE_FAILED: _spec(
        P,
        "profile",
        "The TLS handshake with the server failed.",
        "Check the server's TLS setup and the profile's TLS mode.",
    ),
    ErrorCode.TLS_VERSION_TOO_OLD: _spec(
        P, "profile", "The server offers only TLS older than 1.2.", "Enable TLS 1.2 or 1.3 on the server."
    ),
    ErrorCode.TLS_PROTOCOL_ERROR: _spec(
        P,
        "profile",
        "The server did not speak TLS where TLS was expected.",
        "Use STARTTLS for this port, or the implicit-TLS port.",
    ),
    ErrorCode.CERT_UNTRUSTED: _spec(
        P,
        "profile",
        "The server's certificate is not trusted.",
        "Install a certificate from a trusted authority on the server. For a private CA, an operator"
        " points `MW_TESTER_CA_FILE` (tester-svc) at the CA's certificate (PEM).",
    ),
    ErrorCode.CERT_EXPIRED: _spec(
        P, "profile", "The server's certificate has expired.", "Renew the server's certificate."
    ),
    ErrorCode.CERT_HOSTNAME_MISMATCH: _spec(
        P,
        "profile",
        "The server's certificate does not match its name.",
        "Use the host name the certificate was issued for.",
    ),
    ErrorCode.STARTTLS_UNAVAILABLE: _spec(
        P,
        "profile",
        "The server does not offer STARTTLS.",
        "Enable STARTTLS on the server or use implicit TLS.",
    ),
    ErrorCode.STARTTLS_REFUSED: _spec(
        T, "profile", "The server refused to start TLS.", "Check the server's TLS configuration."
    ),
    ErrorCode.PLAINTEXT_NOT_ALLOWED: _spec(
        P, "profile", "The profile would send credentials without TLS.", "Use implicit TLS or STARTTLS."
    ),
    ErrorCode.PROTOCOL_MISMATCH: _spec(
        P,
        "profile",
        "The server does not speak the expected protocol.",
        "Check the port and protocol in the profile.",
    ),
    ErrorCode.PROTOCOL_VIOLATION: _spec(
        P, "profile", "The server broke the protocol.", "Report the server behaviour to its operator."
    ),
    ErrorCode.RESPONSE_TOO_LONG: _spec(
        P,
        "profile",
        "The server sent a response beyond our limits.",
        "Report the server behaviour to its operator.",
    ),
    ErrorCode.CONNECTION_LOST: _spec(
        T,
        "profile",
        "The server closed the connection unexpectedly.",
        "Retry later; check server logs for the step that failed.",
    ),
    ErrorCode.STEP_TIMEOUT: _spec(
        T, "profile", "The server did not answer in time.", "Retry later; check the server's load."
    ),
    ErrorCode.AUTH_FAILED: _spec(
        P,
        "mailbox",
        "The user name or password was rejected.",
        "Update the mailbox credentials, then Test & Enable again.",
    ),
    ErrorCode.AUTH_MECHANISM_UNSUPPORTED: _spec(
        P,
        "profile",
        "The server offers no login method we can use.",
        "Enable PLAIN or LOGIN over TLS on the server.",
    ),
    ErrorCode.AUTH_TEMPORARY: _spec(T, "mailbox", "The server could not log in right now.", "Retry later."),
    ErrorCode.ACCOUNT_IN_USE: _spec(
        T, "mailbox", "The mailbox is locked by another session.", "Retry later; close other POP3 sessions."
    ),
    ErrorCode.SERVER_TEMPORARY_ERROR: _spec(
        T, "profile", "The server reported a temporary error.", "Retry later."
    ),
    ErrorCode.SERVER_PERMANENT_ERROR: _spec(
        P, "profile", "The server reported a permanent error.", "Check the server's reply in the test trace."
    ),
    ErrorCode.INBOX_UNAVAILABLE: _spec(
        P, "mailbox", "The INBOX could not be opened.", "Check that the account has an INBOX it may read."
    ),
    ErrorCode.SENDER_REFUSED: _spec(
        P,
        "mailbox",
        "The server refused the mailbox as sender.",
        "Allow this account to send as its own address.",
    ),
    ErrorCode.RECIPIENT_REFUSED: _spec(
        P, "mailbox", "The server refused the mailbox as recipient.", "Check the mailbox's email address."
    ),
    ErrorCode.CREDENTIALS_MISSING: _spec(
        P, "mailbox", "The mailbox has no credentials.", "Enter the user name and password of the mailbox."
    ),
    ErrorCode.CREDENTIALS_UNREADABLE: _spec(
        P, "mailbox", "The stored credentials could not be read.", "Enter the mailbox password again."
    ),
    ErrorCode.AUTH_BREAKER_OPEN: _spec(
        T,
        "mailbox",
        "Login attempts are paused: the server refused this login earlier (this password, or too many).",
        "Not tried, to protect the account from a lockout: the server refused the same login in an earlier"
        " test (this or another mailbox with the same user name and password). Fix the credentials; the"
        " test's credentials step says which failure paused it and when logins resume.",
    ),
    ErrorCode.MAILBOX_NOT_APPROVED: _spec(
        P,
        "mailbox",
        "The mailbox's email address has not been approved.",
        "Approve the mailbox, then Test & Enable again.",
    ),
    ErrorCode.TEST_TIMEOUT: _spec(
        T, "profile", "The test did not finish in time.", "Retry later; check the server's responsiveness."
    ),
    ErrorCode.NO_RESULT: _spec(
        T,
        "mailbox",
        "No result came back for the test: it was requested again and still went unanswered.",
        "Test & Enable again; if it persists, check that tester-svc runs and reaches the message bus.",
    ),
    ErrorCode.OUTGOING_NOT_ENABLED: _spec(
        P,
        "mailbox",
        "The mailbox may not send email now (not enabled for outgoing email, not server-side sync, or inactive).",
        "Set outgoing delivery to server-side synchronization, then Test & Enable the mailbox.",
    ),
    ErrorCode.MESSAGE_TOO_LARGE: _spec(
        P,
        "mailbox",
        "The message is larger than the server or the configured limit accepts.",
        "Send smaller attachments, or links to them.",
    ),
    ErrorCode.MESSAGE_REFUSED: _spec(
        P,
        "mailbox",
        "The server refused the message's content.",
        "Check the server's reply; change the message.",
    ),
    ErrorCode.SMTPUTF8_UNSUPPORTED: _spec(
        P,
        "profile",
        "An address is not ASCII and the server does not offer SMTPUTF8.",
        "Use ASCII addresses, or a server that supports SMTPUTF8.",
    ),
    ErrorCode.ATTACHMENT_UNAVAILABLE: _spec(
        P,
        "mailbox",
        "An attachment could not be read from the Object Store.",
        "Upload the attachment again, then send a new request.",
    ),
    ErrorCode.INTERNAL_ERROR: _spec(
        T, "mailbox", "The tester failed unexpectedly.", "Retry later; report it if it persists."
    ),
}

WARNING_MESSAGES: dict[WarningCode, str] = {
    WarningCode.CERT_EXPIRING_SOON: "The server's certificate expires within 14 days.",
    WarningCode.PLAINTEXT_LOGIN_OFFERED: "The server offers login before TLS.",
    WarningCode.WEAK_TLS: "The server negotiated TLS 1.2 with a weak cipher.",
    WarningCode.TLS_VERIFICATION_DISABLED: "TLS certificate verification is off for this profile.",
}
