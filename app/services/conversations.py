"""Conversations and their messages: the storage rules every API (REST, GraphQL, SSE) shares.

Validation and the private-conversation password rule live here once, so REST and GraphQL cannot
drift apart (the old service checked passwords differently in each and forgot them on deletes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from piccolo.query.functions.aggregate import Count, Max

from app.config.snapshot import ConfigSource
from app.db.tables import Conversation, Image, Message, StreamSession
from app.db.text import equals_text
from app.errors import ErrorCode, ServiceError, invalid
from app.schemas.boundary import MAX_ID_CHARS, MAX_MESSAGE_CHARS, MAX_NAME_CHARS
from app.services.image_files import remove_files
from app.services.password_attempts import PasswordAttempts, client_address
from app.services.passwords import MAX_PASSWORD_BYTES, check_password, hash_password
from app.services.streams import abandon_turns_from

#: the old service's default, kept for its clients; with Ollama disabled it could never answer
DEFAULT_MODEL = "llama3.1:8b"
MAX_TAB_NAME_CHARS = MAX_MODEL_CHARS = MAX_NAME_CHARS
SENDERS = ("user", "llm")

CONVERSATION_NOT_FOUND = "Conversation not found"
PASSWORD_REQUIRED = "Password required for private conversation"
INVALID_PASSWORD = "Invalid password"


@dataclass(frozen=True)
class Page:
    conversations: list[Conversation]
    total: int
    message_counts: dict[str, int]
    #: when asked for: the latest reply's provider and model per conversation (absent before its first reply)
    latest_replies: dict[str, ReplySource] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplySource:
    """Who produced a reply: the provider and the model (a fallback's, when one answered)."""

    provider: str | None
    model: str


def _now() -> datetime:
    return datetime.now(UTC)


def _check_text(field: str, value: str | None, limit: int, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise invalid(f"{field} is required", field=field)
        return None
    if len(value) > limit:
        raise invalid(f"{field} is longer than {limit} characters", field=field, limit=limit)
    return value  # a NUL was refused at the boundary (app/schemas/boundary.py)


def _check_password_input(password: str | None) -> None:
    if password is not None and len(password.encode()) > MAX_PASSWORD_BYTES:
        raise invalid(f"password is longer than {MAX_PASSWORD_BYTES} bytes", field="password")


#: the largest id a `Serial` column (PostgreSQL's 32-bit serial) can hold
MAX_SERIAL_ID = 2**31 - 1


def parse_message_id(raw: str | int) -> int | None:
    """Message ids are integers; anything else (the web client's temporary `user-<ms>` ids) is None."""
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def default_conversation_model(ollama_enabled: bool, hf_default_model: str) -> str:
    """The model a new conversation gets when the client names none: the old default while Ollama is
    configured, else the embedded default model (`hf/<HF_DEFAULT_MODEL>`)."""
    return DEFAULT_MODEL if ollama_enabled else f"hf/{hf_default_model}"


class ConversationService:
    """Reads and writes conversations and messages, enforcing validation and the password rule."""

    def __init__(
        self,
        bcrypt_rounds: int = 10,
        default_model: str = DEFAULT_MODEL,
        attempts: PasswordAttempts | None = None,
        config: ConfigSource | None = None,
    ) -> None:
        self.bcrypt_rounds = bcrypt_rounds
        self._default_model = default_model
        #: the published configuration, when there is one: the default model follows it
        self.config = config
        #: wrong passwords per conversation and client; over a limit a check is refused before bcrypt runs
        self.attempts = attempts or PasswordAttempts()

    @property
    def default_model(self) -> str:
        """The model of a conversation created without one."""
        if self.config is None:
            return self._default_model
        settings = self.config.settings
        return default_conversation_model(settings.ollama_enabled, settings.hf_default_model)

    # -- conversations -------------------------------------------------------------------------------

    async def create(
        self,
        *,
        conversation_id: str | None,
        tab_name: str,
        llm_model: str | None = None,
        password: str | None = None,
    ) -> Conversation:
        conversation_id = _check_text("id", conversation_id, MAX_ID_CHARS, required=False) or uuid.uuid4().hex
        _check_text("tabName", tab_name, MAX_TAB_NAME_CHARS)
        model = _check_text("llmModel", llm_model, MAX_MODEL_CHARS, required=False) or self.default_model
        _check_password_input(password)
        if await Conversation.exists().where(Conversation.id == conversation_id):
            raise ServiceError(ErrorCode.CONFLICT, "Conversation ID already exists", details={"id": conversation_id})
        now = _now()
        row = Conversation(
            id=conversation_id,
            tab_name=tab_name,
            llm_model=model,
            is_private=bool(password),
            password_hash=await hash_password(password, self.bcrypt_rounds) if password else None,
            created_at=now,
            updated_at=now,
        )
        try:
            await row.save()
        except Exception as exc:  # a concurrent create with the same id: the database's unique key wins
            if await Conversation.exists().where(Conversation.id == conversation_id):
                raise ServiceError(
                    ErrorCode.CONFLICT, "Conversation ID already exists", details={"id": conversation_id}
                ) from exc
            raise
        return row

    async def list_public(
        self, *, limit: int | None = None, offset: int = 0, with_latest_replies: bool = False
    ) -> Page:
        """Public conversations, most recently active first, with their message counts in one query (and,
        `with_latest_replies`, who wrote each one's latest reply, in one more)."""
        query = (
            Conversation.objects()
            .where(Conversation.is_private.eq(False))
            .order_by(Conversation.updated_at, ascending=False)
            .order_by(Conversation.id, ascending=False)
        )
        if limit is not None:
            query = query.limit(limit).offset(offset)
        rows = await query
        total = await Conversation.count().where(Conversation.is_private.eq(False))
        ids = [row.id for row in rows]
        latest = await self.latest_replies(ids) if with_latest_replies else {}
        return Page(rows, total, await self.message_counts(ids), latest)

    async def message_counts(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        rows = await (
            Message.select(Message.conversation_id, Count(alias="count"))
            .where(Message.conversation_id.is_in(conversation_ids))
            .group_by(Message.conversation_id)
        )
        counts = {row["conversation_id"]: row["count"] for row in rows}
        return {cid: counts.get(cid, 0) for cid in conversation_ids}

    async def latest_replies(self, conversation_ids: list[str]) -> dict[str, ReplySource]:
        """Each conversation's latest reply that names its model (replies stored by a client name none), in
        one query; conversations without one are left out."""
        if not conversation_ids:
            return {}
        latest = (
            Message.select(Max(Message.id))
            .where(Message.conversation_id.is_in(conversation_ids))
            .where(Message.sender == "llm")
            .where(Message.model.is_not_null())
            .group_by(Message.conversation_id)
        )
        rows = await Message.select(Message.conversation_id, Message.provider, Message.model).where(
            Message.id.is_in(latest)
        )
        return {row["conversation_id"]: ReplySource(row["provider"], row["model"]) for row in rows}

    async def find(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""
        return await Conversation.objects().where(equals_text(Conversation.id, conversation_id)).first()

    async def authorize(self, conversation_id: str, password: str | None) -> Conversation:
        """The conversation, if it exists and the password opens it (checked in the old service's order)."""
        row = await self.find(conversation_id)
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, CONVERSATION_NOT_FOUND, details={"id": conversation_id})
        if row.is_private:
            if not password:
                raise ServiceError(
                    ErrorCode.UNAUTHORIZED, PASSWORD_REQUIRED, status=401, details={"reason": "password_required"}
                )
            _check_password_input(password)
            attempt = self.attempts.admit(row.id, client_address.get())
            if not row.password_hash or not await check_password(password, row.password_hash):
                raise ServiceError(
                    ErrorCode.UNAUTHORIZED, INVALID_PASSWORD, status=403, details={"reason": "invalid_password"}
                )
            self.attempts.passed(attempt)
        return row

    async def verify_password(self, conversation_id: str, password: str | None) -> Conversation:
        """The explicit password check of the old `verifyPassword`: only meaningful for private ones."""
        if not password:
            raise invalid("Password is required", field="password")
        row = await self.find(conversation_id)
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, CONVERSATION_NOT_FOUND, details={"id": conversation_id})
        if not row.is_private:
            raise invalid("This conversation is not password protected", field="conversationId")
        return await self.authorize(conversation_id, password)

    async def delete(self, conversation_id: str, password: str | None) -> None:
        """Delete the conversation and everything that hangs off it, in one transaction.

        Its stream sessions go first: a reply being generated finds its row gone and stops (on any replica),
        and one being saved at this moment is either removed with the rest or cannot be saved after.
        """
        row = await self.authorize(conversation_id, password)
        files = await Image.select(Image.file_path).where(Image.conversation_id == row.id)
        async with Conversation._meta.db.transaction():
            await StreamSession.delete().where(StreamSession.conversation_id == row.id)
            await Image.delete().where(Image.conversation_id == row.id)
            await Message.delete().where(Message.conversation_id == row.id)
            await Conversation.delete().where(Conversation.id == row.id)
        remove_files([f["file_path"] for f in files])

    async def set_model(self, conversation: Conversation, model: str, provider: str | None) -> None:
        """Remember the conversation's selected model (it survives restarts)."""
        if conversation.llm_model == model and conversation.provider == provider:
            return
        await Conversation.update({Conversation.llm_model: model, Conversation.provider: provider}).where(
            Conversation.id == conversation.id
        )

    # -- messages ------------------------------------------------------------------------------------

    async def list_messages(self, conversation_id: str) -> list[Message]:
        """Messages in the order they were added (ids are monotonic; timestamps can tie)."""
        return await Message.objects().where(Message.conversation_id == conversation_id).order_by(Message.id)

    async def messages_by_conversation(self, conversation_ids: list[str]) -> dict[str, list[Message]]:
        rows = (
            await Message.objects().where(Message.conversation_id.is_in(conversation_ids)).order_by(Message.id)
            if conversation_ids
            else []
        )
        grouped: dict[str, list[Message]] = {cid: [] for cid in conversation_ids}
        for row in rows:
            grouped[row.conversation_id].append(row)
        return grouped

    @staticmethod
    def check_message_text(text: str) -> None:
        """Refuse (INVALID_REQUEST) a user's message that could not be stored: empty, too long, with a NUL."""
        _check_text("text", text, MAX_MESSAGE_CHARS)

    async def add_message(
        self,
        conversation: Conversation,
        *,
        text: str,
        sender: str,
        has_images: bool = False,
    ) -> Message:
        """Store one message and move the conversation's `updated_at` to it, atomically."""
        _check_text("text", text, MAX_MESSAGE_CHARS, required=sender == "user")
        if sender not in SENDERS:
            raise invalid('Sender must be either "user" or "llm"', field="sender")
        now = _now()
        row = Message(
            conversation_id=conversation.id,
            text=text or "",
            sender=sender,
            timestamp=now,
            created_at=now,
            has_images=has_images,
        )
        async with Message._meta.db.transaction():
            await row.save()
            await Conversation.update({Conversation.updated_at: now}).where(Conversation.id == conversation.id)
        return row

    async def delete_messages_from(self, conversation: Conversation, message_id: int) -> int:
        """Delete `message_id` and every later message of the conversation, by message order.

        Returns how many were deleted; raises NOT_FOUND when the message is not in this conversation.
        A reply being generated for a deleted user message is stopped and not saved.
        """
        target = (
            await Message.select(Message.id)
            .where((Message.id == message_id) & (Message.conversation_id == conversation.id))
            .first()
            if 1 <= message_id <= MAX_SERIAL_ID  # PostgreSQL refuses to compare a serial with a larger number
            else None
        )
        if target is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "Message not found", details={"messageId": message_id})
        doomed = (Message.conversation_id == conversation.id) & (Message.id >= message_id)
        async with Message._meta.db.transaction():
            await abandon_turns_from(conversation.id, message_id)  # first: it locks the turns' session rows
            ids = [row["id"] for row in await Message.select(Message.id).where(doomed)]
            files = await Image.select(Image.file_path).where(Image.message_id.is_in(ids)) if ids else []
            if ids:
                await Image.delete().where(Image.message_id.is_in(ids))
            await Message.delete().where(doomed)
            newest = (
                await Message.select(Message.timestamp)
                .where(Message.conversation_id == conversation.id)
                .order_by(Message.id, ascending=False)
                .first()
            )
            await Conversation.update(
                {Conversation.updated_at: newest["timestamp"] if newest else conversation.created_at}
            ).where(Conversation.id == conversation.id)
        remove_files([f["file_path"] for f in files])
        return len(ids)
