"""The ``alerts:`` section: where down/recovered notifications go (webhooks, Telegram).

Kept with the rest of the configuration so that reading a config file never imports the
sender (:mod:`gateway.park.alerts`) or its HTTP client.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# A public channel or group username (5-32 characters), or a numeric chat id.
_CHAT_ID = re.compile(r"^(-?[0-9]+|@[A-Za-z][A-Za-z0-9_]{3,31})$")


def _http_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or any(c.isspace() for c in value)):
        raise ValueError(f"{key} must be an http:// or https:// URL with a host, got {value!r}")
    return value


class WebhookTarget(BaseModel):
    """A generic JSON webhook: every message is POSTed as one JSON object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["webhook"] = Field(
        "webhook", description="webhook: every message is POSTed as JSON to url (the default)")
    name: str = Field(min_length=1, max_length=64, description="Shown in the status")
    url: str = Field(description="The http:// or https:// URL each message is POSTed to")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Sent with every request, e.g. Authorization")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if "\r" in text or "\n" in text:
                # The value may be a credential: name the header, never show the value.
                raise ValueError(f"header {name!r} has a line break in its value")
        return value


class TelegramTarget(BaseModel):
    """A Telegram chat, reached through a bot (Bot API ``sendMessage``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["telegram"] = Field(
        description="telegram: every message goes to chat_id through the Bot API")
    name: str = Field(min_length=1, max_length=64, description="Shown in the status")
    chat_id: str = Field(description='A numeric id ("-1001234567890") or "@channelname"')
    bot_token: SecretStr = Field(
        description="The token BotFather gave; give it as bot_token_file or "
        "GARDEN_GATEWAY_ALERTS__TARGETS__<i>__BOT_TOKEN, not in the YAML")
    api_url: str = Field("https://api.telegram.org", description="The Bot API's base URL")

    @field_validator("chat_id")
    @classmethod
    def _chat_id(cls, value: str) -> str:
        if not _CHAT_ID.match(value):
            raise ValueError('chat_id must be a number like "-1001234567890" or "@channelname"')
        return value

    @field_validator("bot_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if not token or "/" in token or any(c.isspace() for c in token):
            # Never echo the value: it is (nearly) a secret even when malformed.
            raise ValueError("bot_token must be the token BotFather gave, like 123456:ABC-def")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _http_url(value, "api_url").rstrip("/")


def _target_kind(value: Any) -> str:
    # "kind" may be left out for a webhook; a plain discriminator would demand it.
    if isinstance(value, dict):
        return str(value.get("kind", "webhook"))
    return str(getattr(value, "kind", "webhook"))


Target = Annotated[
    Annotated[WebhookTarget, Tag("webhook")] | Annotated[TelegramTarget, Tag("telegram")],
    Discriminator(_target_kind),
]


class AlertsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Send alerts (false: none are sent)")
    down_after_s: float = Field(300, ge=0, description="How long a device must stay down")
    repeat_s: float | None = Field(None, ge=60, description="Reminder interval while down")
    targets: tuple[Target, ...] = Field(
        (), description="Where alerts go: webhooks and Telegram chats")
    timeout_s: float = Field(10, gt=0, description="HTTP timeout of one delivery")
    backoff_min_s: float = Field(5, gt=0, description="First wait after a failed delivery")
    backoff_max_s: float = Field(
        600, gt=0, description="Longest wait between retries (never sooner than Retry-After)")
    give_up_after_s: float = Field(
        259200, gt=0, description="A message not delivered this long after it was queued is "
        "dropped and counted (72 hours: it waits in data_dir/outbox.sqlite3 meanwhile, "
        "across restarts)")
    max_pending: int = Field(1000, ge=1, description="Per target; the oldest is dropped")
    utc_offset_minutes: int = Field(
        480, ge=-720, le=840, description="Local time in the messages (480: WITA)")
    zone_name: str = Field(
        "WITA", min_length=1, max_length=16, description="The time zone's name in the messages")

    @model_validator(mode="after")
    def _consistent(self) -> AlertsConfig:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not be larger than backoff_max_s")
        names = [t.name for t in self.targets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"target names must be unique: {', '.join(twice)}")
        return self


