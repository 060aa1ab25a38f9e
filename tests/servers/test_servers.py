"""The locally started servers behave like the real thing the services will meet."""

from __future__ import annotations

import asyncio
import datetime as dt
import poplib
import ssl
import tempfile
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import aiosmtplib
import nats
import pytest
from nats.js.api import StreamConfig
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from mailwarden_servers import (
    CertPair,
    DovecotServer,
    NatsServer,
    ServerStartError,
    SmtpProcess,
    SmtpServer,
    TestCertificates,
)

pytestmark = pytest.mark.integration


def _mail(subject: str, sender: str = "alice@mail.test", to: str = "bob@mail.test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("hello from the test suite\n")
    return msg


# --- NATS -----------------------------------------------------------------------------------


async def test_jetstream_dedupes_by_msg_id(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        name = f"T{uuid.uuid4().hex[:8].upper()}"
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], duplicate_window=120))
        first = await js.publish(f"{name}.a", b"one", headers={"Nats-Msg-Id": "id-1"})
        again = await js.publish(f"{name}.a", b"one", headers={"Nats-Msg-Id": "id-1"})
        other = await js.publish(f"{name}.a", b"two", headers={"Nats-Msg-Id": "id-2"})
        assert not first.duplicate and again.duplicate
        assert again.seq == first.seq and other.seq == first.seq + 1
        assert (await js.stream_info(name)).state.messages == 2
        await js.delete_stream(name)
    finally:
        await nc.close()


async def test_nats_restart_keeps_port_and_stream_data(workdir: Path) -> None:
    # Own server: restarting the shared one would cut other tests' connections.
    server = NatsServer(workdir / "nats-restart", config_text="jetstream { sync_interval: always }")
    with server:
        assert server.monitor("jsz")["config"]["sync_always"] is True  # type: ignore[index]
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
        ack = await js.publish("keep.x", b"persisted", headers={"Nats-Msg-Id": "k1"})
        await nc.close()
        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port and server.pid != pid
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        assert (await js.stream_info("KEEP")).state.messages == 1
        assert (await js.get_msg("KEEP", ack.seq)).data == b"persisted"
        dup = await js.publish("keep.x", b"persisted", headers={"Nats-Msg-Id": "k1"})
        assert dup.duplicate  # the dedupe window survives the restart too
        await nc.close()
    assert not server.is_running and server.returncode == 0


def test_broken_server_fails_fast_with_log_tail(workdir: Path) -> None:
    server = NatsServer(workdir / "nats-broken", config_text="this is { not valid")
    with pytest.raises(ServerStartError, match=r"(?s)nats-server .*exited with code [1-9].*log tail") as err:
        server.start()
    assert "Parse error on line 1" in str(err.value)  # nats-server's own complaint
    assert not server.is_running


# --- MongoDB wire ---------------------------------------------------------------------------


async def test_mongo_crud_unique_index_and_transaction(mongo_uri: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    db = client[f"t_{uuid.uuid4().hex[:8]}"]
    try:
        coll = db["mailboxes"]
        await coll.create_index("address", unique=True)
        await coll.insert_one({"address": "a@mail.test", "n": 1})
        found = await coll.find_one({"address": "a@mail.test"}, {"_id": 0})
        assert found == {"address": "a@mail.test", "n": 1}
        with pytest.raises(DuplicateKeyError) as dup:
            await coll.insert_one({"address": "a@mail.test"})
        assert dup.value.code == 11000

        async with client.start_session() as session:
            await session.start_transaction()
            await coll.insert_one({"address": "b@mail.test"}, session=session)
            await session.abort_transaction()
        assert await coll.count_documents({"address": "b@mail.test"}) == 0

        async with client.start_session() as session:
            await session.start_transaction()
            await coll.insert_one({"address": "c@mail.test"}, session=session)
            await coll.update_one({"address": "a@mail.test"}, {"$inc": {"n": 1}}, session=session)
            # Not visible outside the transaction before the commit.
            assert await coll.count_documents({"address": "c@mail.test"}) == 0
            await session.commit_transaction()
        assert await coll.count_documents({}) == 2
        assert (await coll.find_one({"address": "a@mail.test"}) or {})["n"] == 2
    finally:
        await client.drop_database(db.name)
        await client.close()


# --- Dovecot --------------------------------------------------------------------------------


async def test_imaps_login_sees_delivered_message(dovecot: DovecotServer, certs: TestCertificates) -> None:
    subject = f"delivered {uuid.uuid4()}"
    dovecot.deliver("bob", _mail(subject).as_bytes())
    imap = aioimaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=certs.client_context())
    await imap.wait_hello_from_server()
    assert (await imap.login("bob", "bob-pw")).result == "OK"
    selected = await imap.select("INBOX")
    assert selected.result == "OK"
    exists = [int(line.split()[0]) for line in selected.lines if line.endswith(b"EXISTS")]
    assert exists and exists[0] >= 1
    found = await imap.search(f'SUBJECT "{subject}"')
    assert found.result == "OK" and found.lines[0].strip()
    await imap.logout()


async def test_imap_wrong_password_is_authenticationfailed(
    dovecot: DovecotServer, certs: TestCertificates
) -> None:
    imap = aioimaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=certs.client_context())
    await imap.wait_hello_from_server()
    response = await imap.login("alice", "wrong")
    assert response.result == "NO"
    assert b"[AUTHENTICATIONFAILED]" in b" ".join(response.lines)
    await imap.logout()


def test_pop3s_login_and_stat(dovecot: DovecotServer, certs: TestCertificates) -> None:
    dovecot.deliver("alice", _mail("for pop3").as_bytes())
    pop = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s_port, context=certs.client_context(), timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        pop.user("alice")
        pop.pass_("alice-pw")
        count, size = pop.stat()
        assert count >= 1 and size > 0
    finally:
        pop.quit()
    bad = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s_port, context=certs.client_context(), timeout=10)
    bad.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        bad.pass_("wrong")
    bad.close()


async def test_added_user_can_log_in_and_password_changes_apply(
    dovecot: DovecotServer,
    certs: TestCertificates,
    new_mail_user: Callable[..., tuple[str, str]],
) -> None:
    name, password = new_mail_user()

    async def login(pw: str) -> str:
        imap = aioimaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=certs.client_context())
        await imap.wait_hello_from_server()
        result: str = (await imap.login(name, pw)).result
        await imap.logout()
        return result

    assert await login(password) == "OK"
    await asyncio.to_thread(dovecot.set_password, name, "changed-pw")
    assert await login(password) == "NO"
    assert await login("changed-pw") == "OK"


def test_dovecot_rejects_private_workdir(certs: TestCertificates) -> None:
    with tempfile.TemporaryDirectory() as private:  # 0700, like pytest's tmp_path
        server = DovecotServer(Path(private) / "d", certs, {"x": "y"})
        with pytest.raises(PermissionError, match="world-traversable"):
            server.start()


# --- SMTP -----------------------------------------------------------------------------------


async def test_smtp_starttls_auth_and_delivery(smtp_server: SmtpServer, certs: TestCertificates) -> None:
    smtp_server.clear()
    subject = f"starttls {uuid.uuid4()}"
    await aiosmtplib.send(
        _mail(subject),
        hostname="127.0.0.1",
        port=smtp_server.port_starttls,
        start_tls=True,
        tls_context=certs.client_context(),
        username="alice",
        password="alice-pw",
    )
    [msg] = [m for m in smtp_server.messages if subject.encode() in m.data]
    assert msg.auth_login == "alice"
    assert msg.mail_from == "alice@mail.test" and msg.rcpt_tos == ["bob@mail.test"]
    assert smtp_server.sessions == 1 and smtp_server.auth_attempts == 1


async def test_smtp_requires_tls_then_auth(smtp_server: SmtpServer, certs: TestCertificates) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_server.port_starttls, start_tls=False)
    await client.connect()
    await client.ehlo()
    assert not client.supports_extension("auth") and client.supports_extension("starttls")
    await client.starttls(tls_context=certs.client_context())
    await client.ehlo()
    assert client.supports_extension("auth")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await client.login("alice", "wrong")
    assert err.value.code == 535
    with pytest.raises(aiosmtplib.SMTPResponseException) as denied:
        await client.sendmail("alice@mail.test", ["bob@mail.test"], b"Subject: x\r\n\r\nx\r\n")
    assert denied.value.code == 530  # unauthenticated
    await client.quit()


async def test_smtp_implicit_tls_and_refused_recipient(
    smtp_server: SmtpServer, certs: TestCertificates
) -> None:
    smtp_server.refuse_rcpt("nobody@mail.test")
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=smtp_server.port_tls,
        use_tls=True,
        tls_context=certs.client_context(),
    )
    await client.connect()
    await client.login("bob", "bob-pw")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await client.send_message(_mail("refused", to="nobody@mail.test"))
    assert refused.value.recipients[0].code == 550
    await client.send_message(_mail("implicit tls", sender="bob@mail.test"))
    await client.quit()
    assert any(m.auth_login == "bob" and b"implicit tls" in m.data for m in smtp_server.messages)


async def test_smtp_plain_port_has_no_tls(smtp_server: SmtpServer) -> None:
    assert smtp_server.port_plain is not None
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_server.port_plain, start_tls=False)
    await client.connect()
    await client.ehlo()
    assert not client.supports_extension("starttls") and client.supports_extension("auth")
    await client.quit()


async def test_smtp_as_separate_process(workdir: Path, certs: TestCertificates) -> None:
    with SmtpProcess(workdir / "smtp-proc", certs, {"carol": "carol-pw"}) as proc:
        await aiosmtplib.send(
            _mail("from a process", sender="carol@mail.test"),
            hostname="127.0.0.1",
            port=proc.port_tls,
            use_tls=True,
            tls_context=certs.client_context(),
            username="carol",
            password="carol-pw",
        )
        assert proc.pid is not None
    assert "messages=1" in proc.log_since_start()


# --- certificates ---------------------------------------------------------------------------


async def _handshake(certs: TestCertificates, pair: CertPair, server_hostname: str) -> Any:
    """Serve `pair` on a throwaway TLS listener and connect with the verifying client context."""
    server = await asyncio.start_server(
        lambda _r, w: w.close(), "127.0.0.1", 0, ssl=certs.server_context(pair)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=certs.client_context(), server_hostname=server_hostname
        )
        peer = writer.get_extra_info("peercert")
        writer.close()
        return peer
    finally:
        server.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "mail.test"])
async def test_server_cert_is_trusted(certs: TestCertificates, name: str) -> None:
    peer = await _handshake(certs, certs.server, name)
    assert ("DNS", "mail.test") in peer["subjectAltName"]


@pytest.mark.parametrize(
    ("variant", "hostname", "verify_code", "message"),
    [
        ("expired", "mail.test", 10, "certificate has expired"),
        ("wrong_host", "mail.test", 62, "Hostname mismatch"),
        ("wrong_host", "other.example", None, None),
        ("self_signed", "mail.test", 19, "self-signed certificate in certificate chain"),
    ],
)
async def test_broken_cert_variants(
    certs: TestCertificates,
    variant: str,
    hostname: str,
    verify_code: int | None,
    message: str | None,
) -> None:
    pair: CertPair = getattr(certs, variant)
    if verify_code is None:
        await _handshake(certs, pair, hostname)  # valid for its own name: only the host is wrong
        return
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        await _handshake(certs, pair, hostname)
    assert err.value.verify_code == verify_code
    assert message is not None and message in str(err.value)


async def test_expiring_soon_cert_is_valid_for_five_more_days(certs: TestCertificates) -> None:
    peer = await _handshake(certs, certs.expiring_soon, "mail.test")
    not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(peer["notAfter"]), dt.UTC)
    left = not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=4) < left <= dt.timedelta(days=5)


def test_key_files_are_private(certs: TestCertificates) -> None:
    for pair in (certs.server, certs.expired, certs.wrong_host, certs.self_signed):
        assert pair.key.stat().st_mode & 0o777 == 0o600
    assert TestCertificates.load(certs.directory) == certs
