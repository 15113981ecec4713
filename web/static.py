"""GraphiQL's bundled assets (``GET /graphiql-static/<name>``), served from ``web/static/graphiql`` and nowhere else.

Tornado's ``StaticFileHandler`` already refuses (403) a path that resolves outside its root (``..``, ``%2e%2e``,
absolute paths, symlinks out); a name holding a NUL byte made it raise ``ValueError`` (HTTP 500 with a traceback in
the log). :class:`AssetHandler` answers 404 for that, and for a backslash, before touching the file system.
"""
from __future__ import annotations

import tornado.web

__all__ = ["AssetHandler"]


class AssetHandler(tornado.web.StaticFileHandler):
    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path or "\\" in url_path:
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)
