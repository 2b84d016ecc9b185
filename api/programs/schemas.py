from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, computed_field

from api.kit.fields import HttpUrlText, IsoCurrency, Name
from schemas.click_policy import (
    BOT_PATTERNS_MAX,
    DEFAULT_CLICK_MAX_AGE_HOURS,
    MAX_CLICK_MAX_AGE_HOURS,
    RELAY_IPS_MAX,
    RELAY_TOKEN_MIN_LENGTH,
    normalise_bot_pattern,
    normalise_relay_network,
)

AttributionModel = Literal["last_click", "first_click"]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


ClickMaxAgeHours = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_CLICK_MAX_AGE_HOURS,
        description="A pixel click older than this (by its `occurred_at`) is re-dated to its"
        " arrival; the 202 says so per click.",
    ),
]
BotPatterns = Annotated[
    list[Annotated[str, AfterValidator(normalise_bot_pattern)]],
    Field(
        max_length=BOT_PATTERNS_MAX,
        description="Case-insensitive User-Agent substrings that flag a click as a bot, replacing"
        " the built-in list; null = the built-in list. An empty User-Agent is always a bot.",
    ),
    AfterValidator(_unique),
]
RelayNetworks = Annotated[
    list[Annotated[str, AfterValidator(normalise_relay_network)]],
    Field(
        max_length=RELAY_IPS_MAX,
        description="Addresses or CIDR networks of server-side relays whose forwarded shopper"
        " User-Agent and IP are honoured.",
    ),
    AfterValidator(_unique),
]
RelayToken = Annotated[
    str,
    StringConstraints(min_length=RELAY_TOKEN_MIN_LENGTH, max_length=512, pattern=r"^[\x21-\x7e]+$"),
    Field(
        json_schema_extra={"writeOnly": True},
        description="A relay sending it in `X-Refstream-Relay-Token` may forward the shopper's"
        " User-Agent and IP; stored hashed, never shown again (null clears it).",
    ),
]


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    landing_url: HttpUrlText
    currency: IsoCurrency = "USD"
    lookback_days: int = Field(default=30, ge=1, le=3650)
    attribution_model: AttributionModel = "last_click"
    coupon_beats_cookie: bool = True
    binding_months: int = Field(default=0, ge=0, le=120)
    hold_days: int = Field(default=30, ge=0, le=3650)
    click_max_age_hours: ClickMaxAgeHours = DEFAULT_CLICK_MAX_AGE_HOURS
    bot_user_agents: BotPatterns | None = None
    relay_ips: RelayNetworks = Field(default_factory=list)
    relay_token: RelayToken | None = None


class ProgramUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    landing_url: HttpUrlText | None = None
    lookback_days: int | None = Field(default=None, ge=1, le=3650)
    attribution_model: AttributionModel | None = None
    coupon_beats_cookie: bool | None = None
    binding_months: int | None = Field(default=None, ge=0, le=120)
    hold_days: int | None = Field(default=None, ge=0, le=3650)
    click_max_age_hours: ClickMaxAgeHours | None = None
    bot_user_agents: BotPatterns | None = None  # an explicit null restores the built-in list
    relay_ips: RelayNetworks | None = None
    relay_token: RelayToken | None = None  # an explicit null removes the token


class ProgramRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    landing_url: str
    currency: str
    lookback_days: int
    attribution_model: str
    coupon_beats_cookie: bool
    binding_months: int
    hold_days: int
    click_max_age_hours: int
    bot_user_agents: list[str] | None
    relay_ips: list[str]
    relay_token_hash: str | None = Field(default=None, exclude=True)
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def relay_token_set(self) -> bool:
        """Whether a relay token is configured (the token itself is never shown)."""
        return self.relay_token_hash is not None
