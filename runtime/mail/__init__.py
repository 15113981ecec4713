"""Mail as any mail kind sees it, with no I/O: parsing a fetched mail (``parse``, with ``headers``), building an
outgoing one (``build``), splitting off the quoted part (``quoting``, on ``htmlscan``), sanitising its HTML for the
erxes UI (``sanitize``) and telling auto-replies, bounces and our own mail apart (``loops``). The IMAP kind uses it
(kinds/imap); so would any other kind that carries mail."""
