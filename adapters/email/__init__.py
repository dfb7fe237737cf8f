"""Email channel: customers and agents by email (IMAP in, SMTP out) and the email queues' tickets."""
