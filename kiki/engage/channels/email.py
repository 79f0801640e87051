"""Email over SMTP (the standard library's smtplib, run off the event loop).

Any SMTP server works: a relay, a provider's SMTP endpoint, or a local aiosmtpd in tests.
STARTTLS and login are used when configured. Each message carries a Message-ID made from the
delivery log's id, so a provider's bounce can be traced back to the log row.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kiki.engage.channels.base import Channel, MessageChannel, Outgoing, Rejected
from kiki.errors import Unavailable


class SmtpSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field(description="the From address")
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    timeout_s: float = Field(30.0, gt=0)


class SmtpChannel(MessageChannel):
    channel: ClassVar[Channel] = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def _build(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.settings.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        domain = self.settings.sender.rpartition("@")[2] or None
        mail["Message-ID"] = make_msgid(idstring=f"kiki-{message.message_id}", domain=domain)
        mail.set_content(message.body)
        return mail

    def _deliver(self, mail: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as server:
            if s.starttls:
                server.starttls()
            if s.username and s.password:
                server.login(s.username, s.password.get_secret_value())
            server.send_message(mail)

    async def send(self, message: Outgoing) -> str:
        mail = self._build(message)
        try:
            await asyncio.to_thread(self._deliver, mail)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reason = next(iter(exc.recipients.values()))
            raise Rejected(f"the SMTP server refused {message.to}: {code} {reason!r}") from None
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise Rejected(f"the SMTP server refused the message: {exc.smtp_code}") from None
            raise Unavailable(
                f"the SMTP server failed: {exc.smtp_code} {exc.smtp_error!r}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise Unavailable(
                f"cannot deliver email through {self.settings.host}:{self.settings.port}: {exc}"
            ) from None
        return str(mail["Message-ID"])
