"""SELECT sent behind the credentials, and a first sync's searches behind SELECT, against the real
Dovecot: every answer is read by its own tag, also when the login fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr
from sync_helpers import append, message

from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import ImapClient, capability_code
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.wire import Limits, Wire, connect_first
from mailwarden_servers import DovecotServer
from sync_svc.imap_sync import _FirstSearches, select_inbox

pytestmark = pytest.mark.integration

PLAIN = ["IMAP4REV1", "AUTH=PLAIN", "SASL-IR"]
LOGIN_ONLY = ["IMAP4REV1"]  # no AUTH=PLAIN: the LOGIN command


@pytest.fixture
async def client(dovecot: DovecotServer) -> AsyncIterator[ImapClient]:
    sock, _ = await connect_first(["127.0.0.1"], dovecot.imap_port)  # plaintext: Dovecot trusts localhost
    imap = ImapClient(await Wire.open(sock, Limits(65_536, 1 << 20)))
    try:
        await imap.greeting()
        yield imap
    finally:
        imap.wire.abort()


@pytest.mark.parametrize("caps", [PLAIN, LOGIN_ONLY], ids=["authenticate", "login"])
async def test_select_behind_the_credentials_is_read_by_its_tag(
    client: ImapClient, dovecot: DovecotServer, new_mail_user: Callable[..., tuple[str, str]], caps: list[str]
) -> None:
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, [message(i) for i in range(3)])

    reply = await client.authenticate(
        Login(username=user, password=SecretStr(password)), caps, b"SELECT INBOX"
    )

    assert reply.ok and reply.then is not None
    selected = await client.selected(reply.then)
    assert selected.exists == 3 and selected.uidvalidity is not None and not selected.read_only
    (uids,) = await client.uid_searches(b"ALL")  # the session goes on as usual
    assert len(uids) == 3


async def test_a_refused_login_with_select_behind_it_is_the_logins_failure(
    client: ImapClient, new_mail_user: Callable[..., tuple[str, str]]
) -> None:
    user, _ = new_mail_user()

    reply = await client.authenticate(
        Login(username=user, password=SecretStr("wrong")), PLAIN, b"SELECT INBOX"
    )

    assert not reply.ok and reply.error().code is ErrorCode.AUTH_FAILED
    assert reply.then is not None
    with pytest.raises(NetError):  # refused: not logged in
        await client.selected(reply.then)


async def test_searches_sent_before_selects_answer_are_answered_after_it(
    client: ImapClient, dovecot: DovecotServer, new_mail_user: Callable[..., tuple[str, str]]
) -> None:
    """What a first sync sends before reading SELECT's answer (sync_svc.imap_sync._FirstSearches):
    the first window's searches and the whole INBOX's, each answer matched by its tag."""
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, [message(i) for i in range(7)])
    reply = await client.authenticate(
        Login(username=user, password=SecretStr(password)), PLAIN, b"SELECT INBOX"
    )
    assert reply.ok and reply.then is not None
    assert "ESEARCH" in capability_code(reply.text)  # from the login's answer: known before SELECT's

    head = await client.send_uid_search(b"1:3 ALL")
    whole = await client.send_uid_search(b"ALL")
    selected = await client.selected(reply.then)

    assert selected.exists == 7
    first, rest = await client.searched(head), await client.searched(whole)
    assert len(first) == 3 and len(rest) == 7 and set(first) < set(rest)


async def test_a_select_refused_behind_the_login_is_sent_again_on_its_own(
    client: ImapClient, dovecot: DovecotServer, new_mail_user: Callable[..., tuple[str, str]]
) -> None:
    """As with a server that takes no command before it has answered the login: the SELECT behind
    it is refused (here: a folder that does not exist), and so are the searches sent behind that;
    every answer is read, then the INBOX is selected on its own and the session goes on."""
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, [message(i) for i in range(4)])
    login = Login(username=user, password=SecretStr(password))
    reply = await client.authenticate(login, PLAIN, b'SELECT "Not there"')
    searches = _FirstSearches(client, 10.0)
    await searches.send((b"ALL", b"ALL LARGER 100000"), 2)

    selected, left = await select_inbox(client, reply.then, searches)

    assert selected.exists == 4 and left is None
    (uids,) = await client.uid_searches(b"ALL")
    assert len(uids) == 4


async def test_the_first_searches_split_the_inbox_by_uid(
    client: ImapClient, dovecot: DovecotServer, new_mail_user: Callable[..., tuple[str, str]]
) -> None:
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, [message(i) for i in range(7)])
    reply = await client.authenticate(
        Login(username=user, password=SecretStr(password)), PLAIN, b"SELECT INBOX"
    )
    searches = _FirstSearches(client, 10.0)
    await searches.send((b"ALL", b"ALL LARGER 100000"), 3)

    selected, kept = await select_inbox(client, reply.then, searches)

    assert selected.exists == 7 and kept is searches
    first, large = await searches.first()
    rest, rest_large = await searches.found()
    assert len(first) == 3 and len(rest) == 4 and max(first) == searches.after < min(rest)
    assert large == rest_large == [] and searches.top == max(rest)
