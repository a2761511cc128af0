"""All settings in one place, read from `ADVOCACY_*` environment variables and an optional `.env`."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Neo4jSettings(BaseModel):
    database: str = "neo4j"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_base_url: str = "http://127.0.0.1:8000"


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
