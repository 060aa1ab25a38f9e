"""sender-svc: mailboxes send the mail other systems ask for, once, with a classified outcome."""
