"""JSON responses that pass every value through :func:`infra_automation.secrets.redact`."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from infra_automation.secrets import redact


class RedactedJSON(JSONResponse):
    """Known secret values and whole values under secret-looking keys are masked."""

    def render(self, content: Any) -> bytes:
        return super().render(redact(jsonable_encoder(content)))


class RedactedValuesJSON(JSONResponse):
    """Known secret values are masked; keys are kept (JSON Schemas, validated requests:
    a parameter named ``token_ttl`` is not a secret)."""

    def render(self, content: Any) -> bytes:
        return super().render(redact(jsonable_encoder(content), keys=False))


class OneTimeSecretJSON(JSONResponse):
    """Masked like :class:`RedactedJSON` except the top-level ``value``: the token just
    issued, shown once."""

    def render(self, content: Any) -> bytes:
        data = jsonable_encoder(content)
        value = data.pop("value", None) if isinstance(data, dict) else None
        masked = redact(data)
        if value is not None:
            masked["value"] = value
        return super().render(masked)
