"""All settings in one place, read from `ADVOCACY_*` environment variables and an optional `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.contact_policy import ContactPolicy


class Neo4jSettings(BaseModel):
    database: str = "neo4j"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_base_url: str = "http://127.0.0.1:8000"
    customer_token_keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {"k1": SecretStr("dev-only-customer-token-key-change-me")}
    )
    """Keys the merchant's backend signs customer tokens with (HS256), by `kid`; keep the old one while rotating."""
    customer_token_kid: str = "k1"  # noqa: S105 - a key id, not a key
    """The key this engine signs with when it issues a customer token itself (`POST /v1/customer-tokens`)."""
    customer_token_max_ttl_s: int = Field(default=3600, ge=60, le=86400)
    """A customer token living longer than this is refused, whoever signed it: tokens are meant to be short-lived."""
    session_secret: SecretStr = SecretStr("dev-only-session-secret-change-me-now")
    """Signs the page session cookies of marketers (after signing in with a key) and customers."""
    session_ttl_s: int = Field(default=8 * 3600, ge=300, le=7 * 86400)
    secure_cookies: bool = False
    """Mark session cookies `Secure`; turn on wherever the app is served over HTTPS (it should be)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins whose pages may call the API from a browser (the share widget on the merchant's site)."""
    rate_limit_public: str = "120/minute"
    """Per client IP on public routes (`/r/{code}`, landing, unsubscribe, sign-in): `limits` notation."""
    rate_limit_key: str = "6000/minute"
    """Per API key or customer on `/v1`."""
    rate_limit_storage: str = "memory://"
    """`memory://` for one process; `redis://host:port/db` so several API processes share the counts."""
    trust_forwarded_for: bool = False
    """Take the client IP from `X-Forwarded-For` (only behind a proxy that sets it)."""
    idempotency_ttl_s: int = Field(default=86400, ge=60, le=30 * 86400)
    """How long a POST's `Idempotency-Key` replays the first response."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    max_body_bytes: int = Field(default=10 * 2**20, ge=1024)
    """Request bodies over this are refused with 413 before they are read (imports go in batches under it)."""

    @model_validator(mode="after")
    def _strong_keys(self) -> ApiSettings:
        """HS256 keys shorter than the hash are guessable offline from one token (RFC 7518 section 3.2)."""
        keys = {f"customer_token_keys.{kid}": key for kid, key in self.customer_token_keys.items()}
        keys["session_secret"] = self.session_secret
        short = [name for name, key in keys.items() if len(key.get_secret_value().encode()) < 32]
        if short:
            raise ValueError(f"{', '.join(short)}: a signing key needs at least 32 bytes")
        if self.customer_token_kid not in self.customer_token_keys:
            raise ValueError(f"customer_token_kid {self.customer_token_kid!r} is not one of customer_token_keys")
        return self


class AnalysisSettings(BaseModel):
    """`ADVOCACY_ANALYSIS__NX_BACKEND=parallel` runs community detection on an installed NetworkX backend."""

    nx_backend: str | None = None


class CelerySettings(BaseModel):
    """Workers share the RR sampling of target selection when `distribute_sampling` is on."""

    broker_url: str | None = None
    result_backend: str | None = None
    distribute_sampling: bool = False
    sampling_chunks: int = Field(default=8, ge=1, le=1024)
    task_timeout_s: float = Field(default=600.0, gt=0)
    visibility_timeout_s: int = Field(default=3600, ge=1)
    """How long Redis keeps a task a worker took (acks are late) before handing it to another worker: longer
    than the slowest task, or a long task runs twice; a killed worker's tasks wait this long to be run again."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Where each worker serves its Prometheus metrics; None serves none (0 picks a free port)."""


class ReferralSettings(BaseModel):
    """Keys of the referral programme. Every default is for development only; production sets each one."""

    click_hash_key: SecretStr = SecretStr("dev-only-click-hash-key")
    """Keys the hash that replaces a visitor's IP address, so the raw address is never stored."""
    webhook_secret: SecretStr = SecretStr("dev-only-webhook-secret")
    """Signs inbound order and refund webhooks in our documented format (`X-Advocacy-Signature`)."""
    shopify_secret: SecretStr | None = None
    """Shopify's app secret for `X-Shopify-Hmac-Sha256`; the Shopify route is refused while it is unset."""
    webhook_tolerance_s: int = Field(default=300, ge=1, le=86_400)
    """How old a signed webhook may be: older ones are replays."""
    click_cookie: str = "adv_click"
    """Carries the id of the last attributable click, for the friend's signup or order."""
    visitor_cookie: str = "adv_visitor"
    """A long-lived random id per browser, so repeated clicks by one person count as one visitor."""
    cookie_max_age_days: int = Field(default=30, ge=1, le=400)
    default_campaign: str = "default"
    fulfiller_url: str | None = None
    """Where approved rewards are sent (signed JSON POST); without it they are fulfilled in our own ledger."""
    fulfiller_secret: SecretStr = SecretStr("dev-only-fulfiller-secret")
    fulfiller_timeout_s: float = Field(default=5.0, gt=0, le=120)
    fulfiller_attempts: int = Field(default=5, ge=1, le=50)
    allow_private_urls: bool = False
    """Let the fulfiller call loopback and private addresses (development only: it guards against SSRF)."""
    link_cache_s: float = Field(default=5.0, ge=0, le=300)
    """How long a process trusts the code and campaign a referral link read (its own changes show at once);
    0 reads the store on every click."""
    click_batch_ms: float = Field(default=50.0, ge=0, le=5_000)
    """The API writes clicks from a background thread, many per transaction, at most this long after the
    redirect (a signup or order in the same process writes them first); 0 writes each click before redirecting."""
    click_buffer: int = Field(default=20_000, ge=100, le=1_000_000)
    """Clicks kept in memory while the store cannot take them; beyond this, links answer 503."""


class ContactSettings(BaseModel):
    """Where contact limits are counted and how messages leave. Redis in production, SQLite when embedded."""

    backend: str = Field(default="sqlite", pattern="^(sqlite|redis)$")
    sqlite_path: str = "contacts.db"
    """The embedded limiter's file (`backend=sqlite`)."""
    redis_db_url: str | None = None
    """The limiter's Redis (`backend=redis`); defaults to `redis.url`."""
    policy: ContactPolicy = ContactPolicy()
    dispatch: str = Field(default="inline", pattern="^(inline|celery)$")
    """`inline` sends from the API process (embedded mode, no broker); `celery` queues one task per message."""
    lease_s: float = Field(default=120.0, gt=0, le=86_400)
    """How long a worker owns a claimed outbox message before another may take it over."""
    unsubscribe_secret: SecretStr = SecretStr("dev-only-unsubscribe-secret")
    """Signs the one-click unsubscribe links of new messages."""
    unsubscribe_previous_secrets: list[SecretStr] = Field(default_factory=list)
    """Secrets retired from signing whose links still work: links sit in old messages for a year, so rotating
    `unsubscribe_secret` moves the old one here rather than breaking every link already sent."""
    smtp_host: str | None = None
    """Without an SMTP host, email goes to `maildir` (development and the demo)."""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "Advocacy <hello@example.com>"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    maildir: str = "outbox-mail"
    sms_webhook_url: str | None = None
    """Where SMS and WhatsApp messages are POSTed (signed like the fulfiller); unset means those channels hold."""
    sms_webhook_secret: SecretStr = SecretStr("dev-only-sms-secret")


class Settings(BaseSettings):
    """`ADVOCACY_STORE` picks the store; nested groups use `__` (`ADVOCACY_NEO4J__DATABASE=crm`)."""

    model_config = SettingsConfigDict(
        env_prefix="ADVOCACY_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    store: str = "sqlite:///advocacy.db"
    neo4j: Neo4jSettings = Neo4jSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    celery: CelerySettings = CelerySettings()
    referral: ReferralSettings = ReferralSettings()
    contact: ContactSettings = ContactSettings()
    secret_key: SecretStr = SecretStr("dev-only-change-me")

    @property
    def broker_url(self) -> str:
        return self.celery.broker_url or self.redis.url

    @property
    def result_backend(self) -> str:
        return self.celery.result_backend or self.redis.url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
