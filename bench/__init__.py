"""Benchmarks of imap-runtime against the real servers (Dovecot, SecantusDB, RabbitMQ, Redis).

One module per figure, each runnable as ``python -m bench.<name>``; ``bench/run_all.sh`` runs them all.
Results go to ``bench/results/<name>.json``; ``python -m bench.report`` turns them into the table of
``docs/benchmarks.md`` (and PNG plots when matplotlib is installed). See docs/benchmarks.md.
"""
