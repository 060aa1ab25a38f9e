"""sync-svc: synchronizes the INBOX of enabled mailboxes (IMAP, POP3) into EmailReceived events."""
