# imap-runtime: runs `imap-runtime` with configs.json; configure it with erxes's environment variables.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=4000
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY runtime ./runtime
COPY actors ./actors
COPY web ./web
RUN pip install --no-cache-dir . && useradd --system --uid 10001 imap
COPY configs.json ./configs.json
USER imap
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','4000'), timeout=2).read() == b'ok' else 1)"
STOPSIGNAL SIGTERM
CMD ["imap-runtime", "--config", "/app/configs.json"]
