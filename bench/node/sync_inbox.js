// The Node comparison of bench/sync_one_mailbox.py: what a team might pick instead of sync-svc.
// imapflow fetches the whole INBOX (one UID FETCH 1:* of the full source), mailparser's
// simpleParser parses every message fully, one after another. Prints one JSON line:
// {"messages": n, "seconds": s, "attachments": a}. Arguments come as JSON in argv[2]:
// {"host", "port", "servername", "user", "password", "ca"}.
'use strict';

const fs = require('fs');
const { ImapFlow } = require('imapflow');
const { simpleParser } = require('mailparser');

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const started = process.hrtime.bigint();
  const client = new ImapFlow({
    host: opts.host,
    port: opts.port,
    secure: true,
    auth: { user: opts.user, pass: opts.password },
    tls: { ca: fs.readFileSync(opts.ca), servername: opts.servername },
    logger: false,
  });
  await client.connect();
  let messages = 0;
  let attachments = 0;
  const lock = await client.getMailboxLock('INBOX', { readOnly: true });
  try {
    for await (const msg of client.fetch('1:*', { uid: true, size: true, source: true }, { uid: true })) {
      const parsed = await simpleParser(msg.source);
      attachments += parsed.attachments.length;
      messages += 1;
    }
  } finally {
    lock.release();
  }
  await client.logout();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(JSON.stringify({ messages, seconds, attachments }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`sync_inbox.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
