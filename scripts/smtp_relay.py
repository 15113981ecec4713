#!/usr/bin/env python3
"""Tiny local MTA for imap-runtime's local servers: SMTP in (aiosmtpd), LMTP out to Dovecot.

Started by scripts/mailserver.sh (adapted from the verified test bed).

 * listens on 127.0.0.1:PORT, offers STARTTLS (self-signed cert) and AUTH PLAIN/LOGIN
   (after STARTTLS only; checked against Dovecot's passwd-file); AUTH is optional
   unless --auth-required, so Dovecot's submission service can relay through it.
 * RCPT is checked against the users file: 'user' or 'user@any.domain' -> mailbox 'user'
   (an exact 'user@domain' entry wins). Unknown recipients get 550, or go to --catchall.
 * DATA is delivered with LMTP to Dovecot (unix socket or host:port); 250 only after
   Dovecot accepted it, so "sendmail returned" means "it is in the mailbox".
"""
import argparse
import asyncio
import logging
import signal
import smtplib
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("smtp-relay")


def read_users(path):
    users = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or ":" not in line:
                continue
            name, pw = line.split(":")[:2]
            if pw.startswith("{PLAIN}"):
                pw = pw[len("{PLAIN}"):]
            users[name] = pw
    return users


class Handler:
    def __init__(self, args):
        self.args = args

    def mailbox_for(self, addr):
        users = read_users(self.args.users)  # re-read: users may be added live
        addr = addr.strip("<>")
        if addr in users:
            return addr
        local = addr.split("@", 1)[0]
        if local in users:
            return local
        return self.args.catchall

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        box = self.mailbox_for(address)
        if box is None:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(box)
        return "250 2.1.5 OK"

    def _deliver(self, mail_from, rcpts, data):
        target = self.args.lmtp
        if target.startswith("/"):
            lm = smtplib.LMTP(target)
        else:
            host, port = target.rsplit(":", 1)
            lm = smtplib.LMTP(host, int(port))
        try:
            return lm.sendmail(mail_from or "", rcpts, data)
        finally:
            try:
                lm.quit()
            except Exception:
                pass

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        try:
            refused = await asyncio.to_thread(
                self._deliver, envelope.mail_from, envelope.rcpt_tos, data)
        except smtplib.SMTPRecipientsRefused as e:
            log.warning("all refused: %s", e.recipients)
            return "550 5.1.1 All recipients refused by LMTP"
        except Exception as e:  # Dovecot down etc.
            log.exception("LMTP delivery failed")
            return f"451 4.3.0 Local delivery failed: {e}"
        if refused:
            log.warning("partially refused: %s", refused)
        log.info("delivered from=%s to=%s bytes=%d", envelope.mail_from, envelope.rcpt_tos, len(data))
        return "250 2.0.0 Delivered"


def make_authenticator(args):
    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        users = read_users(args.users)
        login = auth_data.login.decode()
        ok = users.get(login) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False)
    return authenticator


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10025)
    p.add_argument("--lmtp", required=True, help="unix socket path or host:port")
    p.add_argument("--users", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--catchall")
    p.add_argument("--auth-required", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    handler = Handler(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", tls_context=tls,
                     authenticator=make_authenticator(args),
                     auth_required=args.auth_required, auth_require_tls=True,
                     require_starttls=False),
        host=args.host, port=args.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d -> LMTP %s", args.host, args.port, args.lmtp)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
