"""The GraphQL schema: thin resolvers that check the old API's input rules, call a service, shape the answer.

Error texts are the old service's, so the web client shows what it always showed; each error also
carries a stable code in `extensions.code`. Unlike the old service, deletes of a private conversation
need its password (an optional `password` argument, which old clients simply never send).
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext

from app.errors import ErrorCode, ServiceError
from app.graphql.errors import CodedErrors, log_errors
from app.graphql.limits import limit_extensions
from app.graphql.models import resolve_available_models, resolve_models, resolve_providers
from app.graphql.types import (
    AddMessageInput,
    AddMessageResponse,
    AvailableModelsResponse,
    ContextInfo,
    Conversation,
    ConversationList,
    CreateConversationInput,
    CreateConversationResponse,
    DeleteConversationResponse,
    DeleteMessagesResponse,
    GenerationOptionsInput,
    Message,
    TerminateStreamInput,
    TerminateStreamResponse,
    VerifyPasswordInput,
    VerifyPasswordResponse,
    WarmupOllamaResponse,
)
from app.graphql.usage import resolve_usage
from app.legacy_errors import GRAPHQL_NOT_TERMINABLE, GRAPHQL_TERMINATE_FAILURES, GRAPHQL_TERMINATE_UNKNOWN
from app.schemas.boundary import Identifier, MessageText, Name, PasswordText, RequiredName, check
from app.schemas.conversations import reply_options
from app.services.chat import TurnRequest, run_to_completion, saved_messages
from app.services.conversations import parse_message_id
from app.services.images import encoded_upload
from app.services.termination import terminate_stream
from app.services.warmup import warm_up


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ServiceError(ErrorCode.INVALID_REQUEST, message)


@strawberry.type
class Query:
    @strawberry.field
    async def conversations(self, info: ContextInfo) -> ConversationList:
        page = await info.context.conversations.list_public()
        items = [Conversation.of(row, page.message_counts[row.id]) for row in page.conversations]
        return ConversationList(conversations=items, count=len(items))

    @strawberry.field
    async def conversation(self, info: ContextInfo, id: str, password: str | None = None) -> Conversation:
        service = info.context.conversations
        row = await service.authorize(id, password)
        counts = await service.message_counts([row.id])
        return Conversation.of(row, counts[row.id])

    @strawberry.field
    async def messages(self, info: ContextInfo, conversation_id: str, password: str | None = None) -> list[Message]:
        service = info.context.conversations
        row = await service.authorize(conversation_id, password)
        return [Message.of(message) for message in await service.list_messages(row.id)]

    available_models: AvailableModelsResponse = strawberry.field(resolver=resolve_available_models)
    models = strawberry.field(resolver=resolve_models, description="Models of every provider, searchable")
    providers = strawberry.field(resolver=resolve_providers, description="Model providers and their health")
    usage = strawberry.field(resolver=resolve_usage, description="Usage per model and hour or day")


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_conversation(
        self, info: ContextInfo, input: CreateConversationInput
    ) -> CreateConversationResponse:
        _require(bool(input.id) and bool(input.tab_name), "Conversation ID and tab name are required")
        check("id", input.id, Identifier)
        check("tabName", input.tab_name, RequiredName)
        check("llmModel", input.llm_model, Name)
        check("password", input.password, PasswordText)
        row = await info.context.conversations.create(
            conversation_id=input.id, tab_name=input.tab_name, llm_model=input.llm_model, password=input.password
        )
        return CreateConversationResponse(
            message="Conversation created successfully", conversation=Conversation.of(row, 0)
        )

    @strawberry.mutation
    async def add_message(
        self, info: ContextInfo, input: AddMessageInput, options: GenerationOptionsInput | None = None
    ) -> AddMessageResponse:
        """sender `llm` stores a turn; sender `user` runs the chat turn and waits for the whole reply."""
        _require(bool(input.text) and bool(input.sender), "Message text and sender are required")
        _require(input.sender in ("user", "llm"), 'Sender must be either "user" or "llm"')
        check("text", input.text, MessageText)
        check("llmModel", input.llm_model, Name)
        generation = reply_options(options.as_wire()) if options else None
        _require(not (input.images and input.sender == "llm"), "Images go with user messages only")
        service = info.context.conversations
        if input.sender == "llm":
            conversation = await service.authorize(input.conversation_id, input.password)
            saved = await service.add_message(conversation, text=input.text, sender="llm")
            return AddMessageResponse(
                message="Message added successfully",
                user_message=Message.of(saved),
                llm_model=input.llm_model or conversation.llm_model,
            )
        # the turn checks the conversation and its password itself (one bcrypt check, not two)
        outcome = await run_to_completion(
            info.context.chat,
            TurnRequest(
                conversation_id=input.conversation_id,
                text=input.text,
                model=input.llm_model,
                password=input.password,
                options=generation,
                uploads=tuple(encoded_upload(value, index) for index, value in enumerate(input.images or ())),
            ),
        )
        user_message, reply = await saved_messages(outcome)
        conversation = await service.find(input.conversation_id) if not (outcome.model or input.llm_model) else None
        return AddMessageResponse(
            message="Message added successfully",
            user_message=Message.of(user_message),
            llm_message=Message.of(reply) if reply else None,
            llm_model=outcome.model or input.llm_model or (conversation.llm_model if conversation else ""),
            error=outcome.error.message if outcome.error else None,
            llm_response_time=round(outcome.response_time_ms, 1) if reply else None,
            error_code=outcome.error.code if outcome.error else None,
        )

    @strawberry.mutation
    async def delete_conversation(
        self, info: ContextInfo, conversation_id: str, password: str | None = None
    ) -> DeleteConversationResponse:
        try:
            await info.context.conversations.delete(conversation_id, password)
        except ServiceError as exc:
            return DeleteConversationResponse(message=exc.message, conversation_id=conversation_id, success=False)
        return DeleteConversationResponse(
            message="Conversation deleted successfully", conversation_id=conversation_id, success=True
        )

    @strawberry.mutation
    async def delete_messages_after(
        self,
        info: ContextInfo,
        conversation_id: strawberry.ID,
        message_id: strawberry.ID,
        password: str | None = None,
    ) -> DeleteMessagesResponse:
        """Deletes the message and every later one; never throws, like the old mutation."""
        service = info.context.conversations
        try:
            conversation = await service.authorize(str(conversation_id), password)
            numeric_id = parse_message_id(message_id)
            if numeric_id is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "Message not found")
            deleted = await service.delete_messages_from(conversation, numeric_id)
        except ServiceError as exc:
            return DeleteMessagesResponse(message=exc.message, deleted_count=0, success=False)
        return DeleteMessagesResponse(message=f"Deleted {deleted} messages", deleted_count=deleted, success=True)

    @strawberry.mutation
    async def verify_password(self, info: ContextInfo, input: VerifyPasswordInput) -> VerifyPasswordResponse:
        row = await info.context.conversations.verify_password(input.conversation_id, input.password)
        return VerifyPasswordResponse(
            message="Password verified successfully", conversation_id=row.id, tab_name=row.tab_name
        )

    @strawberry.mutation
    async def warmup_ollama(self, info: ContextInfo) -> WarmupOllamaResponse:
        """Warms every provider's first model; never throws (the old contract)."""
        report = await warm_up(info.context.catalog, info.context.registry)
        if not report.models:
            reason = "; ".join(report.failures.values()) or "No models available"
            return WarmupOllamaResponse(
                message=f"Failed to warm up Ollama service: {reason}", models=[], count=0, status="error"
            )
        if not report.warmed:
            reason = "; ".join(f"{name}: {error}" for name, error in report.failures.items())
            return WarmupOllamaResponse(
                message=f"Failed to warm up Ollama service: {reason}", models=[], count=0, status="error"
            )
        message = "Ollama service warmed up successfully"
        if report.failures:
            message += " (not warmed: " + ", ".join(report.failures) + ")"
        return WarmupOllamaResponse(message=message, models=report.models, count=len(report.models), status="ready")

    @strawberry.mutation
    async def terminate_stream(self, info: ContextInfo, input: TerminateStreamInput) -> TerminateStreamResponse:
        """Never throws: every failure is a response with `success: false`, as in the old service."""
        try:
            result = await terminate_stream(
                info.context.conversations,
                info.context.sessions,
                session_id=input.session_id,
                conversation_id=input.conversation_id,
                password=input.password,
                reason=input.reason,
            )
        except ServiceError as exc:
            kind = str(exc.details.get("kind"))
            session_id = input.session_id or "unknown"
            if kind == "not_terminable":
                return TerminateStreamResponse(
                    success=False,
                    session_id=session_id,
                    message=exc.message,
                    partial_response=str(exc.details.get("partialResponse", "")),
                    token_count=int(exc.details.get("tokenCount", 0)),
                    final_status=str(exc.details.get("sessionStatus", "ERROR")),
                    termination_reason=str(exc.details.get("terminationReason", "USER_REQUESTED")),
                    error=GRAPHQL_NOT_TERMINABLE,
                )
            message, error = GRAPHQL_TERMINATE_FAILURES.get(
                kind,
                (exc.message, exc.message)  # a refused input (a too long password) or too many wrong passwords
                if kind == "refused"
                else (GRAPHQL_TERMINATE_UNKNOWN, exc.message),
            )
            return TerminateStreamResponse(
                success=False,
                session_id=session_id,
                message=message,
                partial_response="",
                token_count=0,
                final_status="ERROR",
                termination_reason="ERROR",
                error=error,
            )
        return TerminateStreamResponse(
            success=True,
            session_id=result.session_id,
            message="Stream terminated successfully",
            partial_response=result.partial_response,
            token_count=result.token_count,
            final_status=result.final_status,
            termination_reason=result.reason,
            error=None,
        )


class BethSchema(strawberry.Schema):
    """Logs expected errors (bad input, wrong password) quietly and unexpected ones once, with their cause."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        log_errors(errors)


schema = BethSchema(query=Query, mutation=Mutation, extensions=[CodedErrors(), *limit_extensions()])
