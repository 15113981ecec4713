"""The composition root: the one place that knows every layer (runtime/, actors/, web/ and the kinds) and puts them
together into a running process (``app/process.py``), behind the ``imap-runtime`` command (``app/main.py``).
Nothing imports it but the command-line aliases; tests/test_layering.py checks that."""
