"""What Django's error pages and reports print of the settings and of a failing frame's variables: no credentials.

Django's own filter hides settings whose *names* look secret (PASSWORD, KEY, TOKEN, ...). Ours also
hides the password inside any URL (DATABASE_URL, REDIS_URL, the cache's LOCATION, the channel
layer's address), and KafkaSettings prints no SASL password (its repr leaves it out).
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host -> scheme://user:********@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?P<at>@)", re.I)


def mask_urls(text: str) -> str:
    """`text` with the password of every URL in it replaced: safe to print or log."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{SafeReporterFilter.cleansed_substitute}{m['at']}", text)


class SafeReporterFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        return mask_urls(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        return [
            (name, self.cleansed_substitute if self.hidden_settings.search(name) else self._mask(value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

    @staticmethod
    def _mask(value: Any) -> Any:
        return mask_urls(value) if isinstance(value, str) else value
