"""Piccolo tables: the old service's four tables (docs/compatibility.md, "Database") plus what later capabilities fill.

Column names follow the old schema so an operator reading the database finds what they knew. Status
and reason values are validated by the services that write them (Piccolo has no CHECK constraints).
"""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    BigInt,
    Boolean,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Conversation(Table, tablename="conversations"):
    id = Varchar(length=255, primary_key=True)
    tab_name = Varchar(length=255)
    llm_model = Varchar(length=255, default="llama3.1:8b")
    provider = Varchar(length=50, null=True, default=None)
    is_private = Boolean(default=False, index=True)
    password_hash = Varchar(length=255, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow(), index=True)


class Message(Table, tablename="messages"):
    id = Serial(primary_key=True)
    conversation_id = ForeignKey(references=Conversation, on_delete=OnDelete.cascade, index=True)
    text = Text()
    sender = Varchar(length=50)
    timestamp = Timestamptz(default=TimestamptzNow(), index=True)
    created_at = Timestamptz(default=TimestamptzNow())
    has_images = Boolean(default=False)
    provider = Varchar(length=50, null=True, default=None)
    model = Varchar(length=255, null=True, default=None)
    # the model asked for, when it could not start and `model` (a fallback) answered instead
    fallback_from = Varchar(length=255, null=True, default=None)
    # complete | partial | failed
    status = Varchar(length=20, default="complete")
    prompt_tokens = Integer(null=True, default=None)
    completion_tokens = Integer(null=True, default=None)
    time_to_first_token_ms = DoublePrecision(null=True, default=None)
    duration_ms = DoublePrecision(null=True, default=None)
    finish_reason = Varchar(length=30, null=True, default=None)


class Image(Table, tablename="images"):
    id = Varchar(length=255, primary_key=True)
    conversation_id = ForeignKey(references=Conversation, on_delete=OnDelete.cascade, index=True)
    message_id = ForeignKey(references=Message, on_delete=OnDelete.cascade, null=True, index=True)
    filename = Varchar(length=255)
    file_path = Varchar(length=500)
    file_size = Integer()
    mime_type = Varchar(length=100)
    content_hash = Varchar(length=64, index=True)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(index=True)
    deleted_at = Timestamptz(null=True, default=None)


class StreamSession(Table, tablename="stream_sessions"):
    id = Varchar(length=255, primary_key=True)
    conversation_id = ForeignKey(references=Conversation, on_delete=OnDelete.cascade, index=True)
    model = Varchar(length=255)
    provider = Varchar(length=50, null=True, default=None)
    # set when a fallback answers: `model` and `provider` then name the fallback, this the model asked for
    fallback_from = Varchar(length=255, null=True, default=None)
    # ACTIVE | COMPLETED | TERMINATED | ERROR
    status = Varchar(length=20, default="ACTIVE", index=True)
    started_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    ended_at = Timestamptz(null=True, default=None)
    partial_response = Text(default="")
    token_count = Integer(default=0)
    # USER_REQUESTED | TIMEOUT | ERROR | SERVER_SHUTDOWN
    termination_reason = Varchar(length=30, null=True, default=None)
    error_message = Text(null=True, default=None)
    timeout_ms = Integer(default=300000)
    user_message_id = Integer(null=True, default=None)
    assistant_message_id = Integer(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class ProviderConfig(Table, tablename="provider_configs"):
    """A provider table configured through the API (`/api/v1/providers/<name>/config`): the table as given in
    `settings`, its type in `kind`; written by the configuration service (`app/config/provider_store.py`)."""

    id = Serial(primary_key=True)
    name = Varchar(length=100, unique=True)
    kind = Varchar(length=30)
    display_name = Varchar(length=255, default="")
    enabled = Boolean(default=True)
    settings = JSON(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class ModelRecord(Table, tablename="model_metadata"):
    """A model's generated or edited configuration and what was learnt about it (capabilities, context)."""

    id = Serial(primary_key=True)
    name = Varchar(length=255, unique=True)
    provider = Varchar(length=50, index=True)
    display_name = Varchar(length=255, default="")
    family = Varchar(length=100, null=True, default=None)
    parameter_size = Varchar(length=50, null=True, default=None)
    quantization = Varchar(length=50, null=True, default=None)
    context_length = Integer(null=True, default=None)
    capabilities = JSON(default="{}")
    enabled = Boolean(default=True)
    default_options = JSON(default="{}")
    context_budget = Integer(null=True, default=None)
    system_prompt = Text(null=True, default=None)
    keep_alive_s = Integer(null=True, default=None)
    metadata = JSON(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(null=True, default=None)


class ModelUsageStats(Table, tablename="model_usage_stats"):
    """Aggregates per model per period (`hour` or `day`), updated as generations finish."""

    id = Serial(primary_key=True)
    provider = Varchar(length=50)
    model = Varchar(length=255, index=True)
    period = Varchar(length=10)
    period_start = Timestamptz(index=True)
    requests = Integer(default=0)
    errors = Integer(default=0)
    cancelled = Integer(default=0)
    prompt_tokens = BigInt(default=0)
    completion_tokens = BigInt(default=0)
    total_duration_ms = DoublePrecision(default=0.0)
    total_time_to_first_token_ms = DoublePrecision(default=0.0)
    max_duration_ms = DoublePrecision(default=0.0)
    updated_at = Timestamptz(default=TimestamptzNow())


class ConfigRevision(Table, tablename="config_revisions"):
    """Every applied (or refused) configuration, so an operator can see history, diff and restore."""

    id = Serial(primary_key=True)
    created_at = Timestamptz(default=TimestamptzNow(), index=True)
    # startup | file | api | restore
    source = Varchar(length=20)
    content = JSON(default="{}")
    diff = JSON(default="{}")
    valid = Boolean(default=True)
    error = Text(null=True, default=None)
    applied = Boolean(default=False)


ALL_TABLES: tuple[type[Table], ...] = (
    Conversation,
    Message,
    Image,
    StreamSession,
    ProviderConfig,
    ModelRecord,
    ModelUsageStats,
    ConfigRevision,
)
