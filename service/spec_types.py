"""The spec's building blocks, shared by service.spec and service.notify_spec: a model
that refuses unknown fields and coerces nothing, and text a file name or a database
value can hold."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def plain_text(value: str) -> str:
    # NUL cannot be in a path or a Postgres text value, and a lone surrogate cannot be
    # encoded as UTF-8: either would fail deep inside the server, not as a 422.
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("contains a lone surrogate, which is not valid Unicode text") from exc
    return value


Text = Annotated[str, AfterValidator(plain_text)]
# Weights are checked against the data, where a message can name the class or row at fault
# (service.rebalance.weights, service.data.splits): NaN and inf are let through to there.
AnyFloat = Annotated[float, Field(allow_inf_nan=True)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
