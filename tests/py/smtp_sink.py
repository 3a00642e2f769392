"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the e-mail channel tests.

Usage: smtp_sink.py MODE OUT_DIR [CERT KEY USER PASSWORD]
  MODE: plain (no TLS offered), starttls (STARTTLS required before AUTH and
  MAIL) or tls (implicit TLS from the first byte).
Prints the port on the first line of stdout once it accepts connections.
Every message received is parsed with Python's email package and written as
OUT_DIR/<n>.json (envelope, whether it came over TLS and authenticated, the
parsed headers and text body) next to the raw OUT_DIR/<n>.eml. Stops when
stdin closes, or after 120 s at the latest.
"""
import asyncio
import email
import email.policy
import json
import os
import socket
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

mode, out = sys.argv[1], sys.argv[2]
cert = key = user = password = None
if len(sys.argv) > 3:
    cert, key, user, password = sys.argv[3:7]


class Sink:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "message_id": str(msg["message-id"]),
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "body": body.get_content() if body is not None else None,
        }
        with open(os.path.join(out, f"{self.n}.eml"), "wb") as f:
            f.write(raw)
        with open(os.path.join(out, f"{self.n}.json"), "w") as f:
            json.dump(record, f)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        user is not None
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    # handled=False: aiosmtpd answers (235 or 535) itself.
    return AuthResult(success=ok, handled=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ctx = None
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

kwargs = {"hostname": "127.0.0.1", "port": free_port()}
if mode == "starttls":
    kwargs.update(
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
elif mode == "tls":
    kwargs.update(
        ssl_context=ctx,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
controller = Controller(Sink(), **kwargs)
controller.start()
print(controller.port, flush=True)

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
stop.wait(120)
controller.stop()
