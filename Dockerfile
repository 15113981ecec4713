# imap-runtime: runs `imap-runtime` with configs.json; configure it with erxes's environment variables.
# STANDALONE stays auto (configs.json): beside erxes the emulation is off; BIND_ADDRESS stays 0.0.0.0.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=4000 BIND_ADDRESS=0.0.0.0
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY runtime ./runtime
COPY actors ./actors
COPY web ./web
COPY kinds ./kinds
COPY app ./app
RUN pip install --no-cache-dir . && useradd --system --uid 10001 imap
COPY configs.json ./configs.json
USER imap
EXPOSE 4000
# Healthy while /ready answers 200 (MongoDB, RabbitMQ and, with leases, Redis answer: a 503 or no answer fails);
# the start period covers STARTUP_WAIT_SECONDS (60), the wait for servers that start after this container.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT','4000'), timeout=4)"
STOPSIGNAL SIGTERM
CMD ["imap-runtime", "--config", "/app/configs.json"]
