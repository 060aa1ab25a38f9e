"""Failures → catalog codes, from protocol codes and exception types, never from message wording.

IMAP: RFC 5530 response codes (``NO [AUTHENTICATIONFAILED]``). POP3: RFC 2449/3206 response codes
(``-ERR [AUTH]``, ``[SYS/TEMP]``, ``[IN-USE]``). SMTP: the reply code and the RFC 3463 enhanced
status code. TLS: OpenSSL's verify codes and reason names. Sockets: errno values.
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl

from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError

# OpenSSL X509_V_ERR_* verify codes.
_X509_EXPIRED = 10
_X509_NOT_YET_VALID = 9
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_MISMATCH = 64

_OLD_TLS_REASONS = {
    "UNSUPPORTED_PROTOCOL",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "WRONG_SSL_VERSION",
}
_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
    "UNKNOWN_PROTOCOL",
    "RECORD_TOO_LARGE",
}

_LOST = (
    asyncio.IncompleteReadError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    EOFError,
)


def classify_tls_error(exc: ssl.SSLError) -> NetError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _X509_EXPIRED:
            return NetError(ErrorCode.CERT_EXPIRED, "certificate has expired")
        if code == _X509_NOT_YET_VALID:
            return NetError(ErrorCode.CERT_EXPIRED, "certificate is not yet valid")
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH):
            return NetError(ErrorCode.CERT_HOSTNAME_MISMATCH, "certificate does not match the host")
        return NetError(ErrorCode.CERT_UNTRUSTED, f"certificate not trusted (verify code {code})")
    reason = exc.reason or ""
    if reason in _OLD_TLS_REASONS:
        return NetError(ErrorCode.TLS_VERSION_TOO_OLD, f"TLS version refused ({reason})")
    if reason in _NOT_TLS_REASONS:
        return NetError(ErrorCode.TLS_PROTOCOL_ERROR, f"the server did not answer with TLS ({reason})")
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return NetError(ErrorCode.TLS_HANDSHAKE_FAILED, "connection closed during the TLS handshake")
    return NetError(ErrorCode.TLS_HANDSHAKE_FAILED, f"TLS handshake failed ({reason or 'unknown'})")


def classify_exception(exc: BaseException, timeout_code: ErrorCode) -> NetError:
    """Map anything a step raised onto a catalog code (unexpected ones become internal_error)."""
    if isinstance(exc, NetError):
        return exc
    if isinstance(exc, TimeoutError):
        return NetError(timeout_code, "no answer in time")
    if isinstance(exc, ssl.SSLError):
        return classify_tls_error(exc)
    if isinstance(exc, ConnectionRefusedError):
        return NetError(ErrorCode.TCP_REFUSED, "connection refused")
    if isinstance(exc, _LOST):
        return NetError(ErrorCode.CONNECTION_LOST, "the server closed the connection")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return NetError(ErrorCode.TCP_UNREACHABLE, f"network unreachable (errno {exc.errno})")
        if exc.errno == errno.ETIMEDOUT:
            return NetError(timeout_code, "timed out")
        return NetError(ErrorCode.CONNECTION_LOST, f"socket error (errno {exc.errno})")
    return NetError(ErrorCode.INTERNAL_ERROR, type(exc).__name__)


# --- IMAP (RFC 5530, RFC 3501) ----------------------------------------------------------------
_IMAP_CODE = re.compile(rb"^\[([A-Z0-9-]+)(?:[ \]])")

IMAP_AUTH_CODES: dict[str, ErrorCode] = {
    "AUTHENTICATIONFAILED": ErrorCode.AUTH_FAILED,
    "AUTHORIZATIONFAILED": ErrorCode.AUTH_FAILED,
    "EXPIRED": ErrorCode.AUTH_FAILED,
    "CONTACTADMIN": ErrorCode.AUTH_FAILED,
    "UNAVAILABLE": ErrorCode.AUTH_TEMPORARY,
    "PRIVACYREQUIRED": ErrorCode.PLAINTEXT_NOT_ALLOWED,
    "INUSE": ErrorCode.ACCOUNT_IN_USE,
    "SERVERBUG": ErrorCode.SERVER_TEMPORARY_ERROR,
    "LIMIT": ErrorCode.AUTH_TEMPORARY,
}
IMAP_SELECT_CODES: dict[str, ErrorCode] = {
    "NONEXISTENT": ErrorCode.INBOX_UNAVAILABLE,
    "NOPERM": ErrorCode.INBOX_UNAVAILABLE,
    "INUSE": ErrorCode.ACCOUNT_IN_USE,
    "UNAVAILABLE": ErrorCode.SERVER_TEMPORARY_ERROR,
    "SERVERBUG": ErrorCode.SERVER_TEMPORARY_ERROR,
    "LIMIT": ErrorCode.SERVER_TEMPORARY_ERROR,
    "CORRUPTION": ErrorCode.SERVER_TEMPORARY_ERROR,
}


def imap_response_code(text: bytes) -> str | None:
    """``[AUTHENTICATIONFAILED] Authentication failed.`` → ``AUTHENTICATIONFAILED``."""
    m = _IMAP_CODE.match(text)
    return m.group(1).decode() if m else None


def imap_failure(status: str, text: bytes, codes: dict[str, ErrorCode], default: ErrorCode) -> ErrorCode:
    """A tagged NO/BAD: the RFC 5530 code decides; without one, ``default`` (NO) or a violation (BAD)."""
    code = imap_response_code(text)
    if code is not None and code in codes:
        return codes[code]
    return default if status == "NO" else ErrorCode.PROTOCOL_VIOLATION


# --- POP3 (RFC 2449 RESP-CODES, RFC 3206) ------------------------------------------------------
_POP3_CODE = re.compile(rb"^\[([A-Z0-9/-]+)\]")
POP3_CODES: dict[str, ErrorCode] = {
    "AUTH": ErrorCode.AUTH_FAILED,
    "SYS/TEMP": ErrorCode.AUTH_TEMPORARY,
    "SYS/PERM": ErrorCode.SERVER_PERMANENT_ERROR,
    "IN-USE": ErrorCode.ACCOUNT_IN_USE,
    "LOGIN-DELAY": ErrorCode.AUTH_TEMPORARY,
}


def pop3_response_code(text: bytes) -> str | None:
    m = _POP3_CODE.match(text)
    return m.group(1).decode() if m else None


def pop3_failure(text: bytes, default: ErrorCode) -> ErrorCode:
    code = pop3_response_code(text)
    if code is None:
        return default
    if code in POP3_CODES:
        return POP3_CODES[code]
    top = code.split("/", 1)[0]
    return POP3_CODES.get(top, default)


# --- SMTP (RFC 5321 reply codes, RFC 3463 enhanced status codes) -------------------------------
_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


def smtp_enhanced(text: bytes) -> tuple[int, int, int] | None:
    m = _ENHANCED.match(text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def smtp_auth_failure(code: int, text: bytes) -> ErrorCode:
    enhanced = smtp_enhanced(text)
    if code == 535 or enhanced == (5, 7, 8):
        return ErrorCode.AUTH_FAILED
    if code == 534 or enhanced == (5, 7, 9):
        return ErrorCode.AUTH_MECHANISM_UNSUPPORTED
    if code == 538 or enhanced == (5, 7, 11):
        return ErrorCode.PLAINTEXT_NOT_ALLOWED
    if code == 504:
        return ErrorCode.AUTH_MECHANISM_UNSUPPORTED
    if 400 <= code < 500:
        return ErrorCode.AUTH_TEMPORARY
    if enhanced is not None and enhanced[1] == 7:
        return ErrorCode.AUTH_FAILED
    return ErrorCode.SERVER_PERMANENT_ERROR


def smtp_envelope_failure(code: int, text: bytes, permanent: ErrorCode) -> ErrorCode:
    """MAIL FROM / RCPT TO refused: 5xx is the address' fault (``permanent``), 4xx is temporary."""
    if 400 <= code < 500:
        return ErrorCode.SERVER_TEMPORARY_ERROR
    enhanced = smtp_enhanced(text)
    if enhanced is not None and enhanced[1] in (3, 4, 5):  # mail system, network, protocol
        return ErrorCode.SERVER_PERMANENT_ERROR
    return permanent


def smtp_generic_failure(code: int) -> ErrorCode:
    return ErrorCode.SERVER_TEMPORARY_ERROR if 400 <= code < 500 else ErrorCode.SERVER_PERMANENT_ERROR
