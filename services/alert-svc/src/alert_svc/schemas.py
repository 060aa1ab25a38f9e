"""API request and response models (HTTP and NATS request-reply share them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from contracts.events import AlertLevel
from contracts.models import Direction, EmailAddress, Identifier, Owner, OwnerKind

AlertId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f-]{36}$")]
WebhookId = Annotated[str, StringConstraints(pattern=r"^wh_[0-9a-f]{32}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(Strict):
    """A request without parameters."""


class AlertQuery(Strict):
    recipient_kind: OwnerKind | None = None
    recipient_id: Identifier | None = None
    level: AlertLevel | None = None
    unread: bool | None = None
    state: Literal["open", "resolved"] | None = None
    mailbox_id: Identifier | None = None
    profile_id: Identifier | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, StringConstraints(max_length=200)] | None = None


class AlertRef(Strict):
    alert_id: AlertId


class MarkRead(Strict):
    read: bool = True


class MarkReadRequest(AlertRef, MarkRead):
    pass


class RecipientRef(Strict):
    recipient_kind: OwnerKind
    recipient_id: Identifier


class AlertView(BaseModel):
    id: str
    recipient: Owner
    level: AlertLevel
    kind: str
    code: str
    title: str
    message: str
    remediation: str
    mailbox_id: str | None
    mailbox_email: str | None
    profile_id: str | None
    direction: Direction | None
    state: Literal["open", "resolved"]
    count: int
    affected_mailboxes: list[str]
    test_id: str | None
    last_test_id: str | None
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None = None
    resolved_reason: str | None = None
    read: bool


class AlertPage(BaseModel):
    items: list[AlertView]
    next_cursor: str | None


class Deleted(BaseModel):
    deleted: int


class WebhookCreate(Strict):
    url: AnyHttpUrl
    recipient_kind: OwnerKind | None = None
    recipient_id: Identifier | None = None
    levels: list[AlertLevel] = Field(default_factory=list, description="Empty: every level.")
    secret: Annotated[str, StringConstraints(min_length=16, max_length=256)] | None = Field(
        None, description="Signing secret; generated (and returned once) when absent."
    )


class WebhookView(BaseModel):
    id: str
    url: str
    recipient_kind: OwnerKind | None
    recipient_id: str | None
    levels: list[AlertLevel]
    created_at: datetime
    created_by: str = Field("", description="Who registered it (`token:<sub>` / `jwt:<sub>`).")
    has_secret: bool = True


class WebhookCreated(WebhookView):
    secret: str = Field(description="Shown once: keep it to verify X-Mailwarden-Signature.")


class WebhookList(BaseModel):
    items: list[WebhookView]


class WebhookRef(Strict):
    webhook_id: WebhookId


class DeliveryQuery(Strict):
    state: Literal["pending", "delivered", "failed"] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class DeliveryListRequest(WebhookRef, DeliveryQuery):
    pass


class DeliveryAttempt(BaseModel):
    at: datetime
    status: int | None
    error: str | None
    duration_ms: float


class DeliveryView(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    alert_id: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    history: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    items: list[DeliveryView]


class Preferences(Strict):
    email_levels: list[AlertLevel] = Field(description="Levels mailed to this recipient (empty: none).")
    email: EmailAddress | None = Field(None, description="Notification address; default: the owner's email.")


class PreferencesRequest(RecipientRef, Preferences):
    pass
