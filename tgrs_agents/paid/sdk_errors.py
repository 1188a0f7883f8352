"""SDK errors classified: an ``openai`` / ``anthropic`` exception becomes a :class:`TeacherError`.

Adapters classify, the retry policy (:mod:`tgrs_agents.paid.retry`) decides: ``retryable``, ``kind``
and the server's ``retry-after`` travel on the error, and so do the response's headers, which the
rate-limit layer hands to the endpoint's limiter. Classification is tested on real SDK exception
objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ErrorKind, TeacherError


def retry_after_from(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    h = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in h:
            return max(float(h["retry-after-ms"]) / 1000, 0.0)
        if "retry-after" in h:
            v = h["retry-after"]
            try:
                return max(float(v), 0.0)
            except ValueError:
                import datetime as dt
                from email.utils import parsedate_to_datetime

                when = parsedate_to_datetime(v)
                return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)
    except (ValueError, TypeError):
        return None
    return None


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def classify_status(status: int) -> tuple[bool, ErrorKind]:
    """(retryable, kind) for an HTTP status."""
    if status == 429:
        return True, "rate_limit"
    if status == 529 or status >= 500:
        return True, "server" if status != 529 else "overloaded"
    if status in (408, 409):
        return True, "timeout" if status == 408 else "conflict"
    if status in (401, 403):
        return False, "auth"
    return False, "bad_request"


def classify_sdk_error(exc: BaseException, sdk: Any, teacher: str) -> TeacherError | None:
    """Map an ``openai`` / ``anthropic`` SDK exception to a TeacherError (None: not an SDK error).

    The message never includes request headers, so no key can leak through it.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return TeacherError("request timed out", teacher=teacher, retryable=True, kind="timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return TeacherError(f"connection failed: {type(exc).__name__}", teacher=teacher,
                            retryable=True, kind="connection")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        retryable, kind = classify_status(status)
        headers = getattr(exc.response, "headers", None)
        return TeacherError(
            f"HTTP {status} {type(exc).__name__}: {str(getattr(exc, 'message', exc))[:200]}",
            teacher=teacher, status=status, retryable=retryable, kind=kind,
            retry_after=retry_after_from(headers) if retryable else None,
            headers=dict(headers.items()) if headers else None,
        )
    return None
