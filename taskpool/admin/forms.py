"""The admin's forms: a day's filters, sending a task, cancelling one.

Sending validates exactly as ``POST /pool/task`` does: the form collects the
fields as the API would receive them (``meta`` parsed as the API parses a
body) and hands them to the API's own ``TaskRequestSerializer``, so every
field's error shows at once; the store's domain errors are shown on the
field they name.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from taskpool.api.errors import field_errors
from taskpool.api.parsers import strict_loads
from taskpool.api.serializers import TaskRequestSerializer
from taskpool.exceptions import PoolError
from taskpool.message_filter import MessageFilter
from taskpool.messages import IDEMPOTENCY_KEY_RE, MESSAGE_TYPES, RESPONSE_STATUSES

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # \d and int() would take other digits too


class DayFilterForm(forms.Form):
    """What a day page shows: ``type``, ``status``, ``from``, ``to`` and ``q`` (text)."""

    type = forms.ChoiceField(
        required=False, choices=[("", _("All"))] + [(kind, kind) for kind in MESSAGE_TYPES]
    )
    status = forms.ChoiceField(
        required=False,
        choices=[("", _("All"))] + [(status, status) for status in RESPONSE_STATUSES],
    )
    q = forms.CharField(required=False, strip=True, label=_("Text"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword: these two are added by name.
        self.fields["from"] = forms.CharField(required=False, strip=True, label=_("From"))
        self.fields["to"] = forms.CharField(required=False, strip=True, label=_("To"))

    def message_filter(self, **fixed: str) -> MessageFilter:
        """The filter the valid fields describe (invalid ones are left out), with ``fixed``."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        conditions = {
            "type": data.get("type"),
            "status": data.get("status"),
            "sender": data.get("from"),
            "recipient": data.get("to"),
            "text": data.get("q"),
        }
        return MessageFilter(**{**conditions, **fixed})


class SendTaskForm(forms.Form):
    """A task, as ``POST /pool/task`` takes it. Every rule is the API's."""

    to = forms.CharField(
        required=False,
        strip=False,
        help_text=_("device:<id>, device:* (every device) or device:[<id>,<id>]"),
    )
    title = forms.CharField(required=False, strip=False)
    body = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 4}))
    meta = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "taskpool-mono"}),
        help_text=_('A JSON object, for example {"script": "backup.sh"}. Empty: {}.'),
    )
    ttl = forms.CharField(
        required=False,
        label=_("TTL (seconds)"),
        help_text=_("When the task expires, in seconds from now. Empty: TASK_TTL."),
    )
    # A CharField with a select, so that the API's rule (not Django's) judges the value.
    mode = forms.CharField(
        required=False,
        widget=forms.Select(
            choices=[("", _("every addressed device")), ("any", _("any one device (any)"))]
        ),
        help_text=_("Who does it: each addressed device, or the first one to claim it."),
    )
    # Jobs that look after themselves: JSON objects, as the API takes them.
    retries = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 1, "class": "taskpool-mono"}),
        help_text=_(
            'For example {"max_attempts": 3, "on": ["failed", "timed_out"], "backoff": 60}.'
        ),
    )
    timeout = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 1, "class": "taskpool-mono"}),
        help_text=_('For example {"in_progress": 600}: seconds to finish once started.'),
    )
    rollout = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 1, "class": "taskpool-mono"}),
        help_text=_(
            'For example {"max_per_minute": 60}, or {"base_per_minute": 10, '
            '"increment_factor": 2, "after_succeeded": 20}.'
        ),
    )
    abort = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 1, "class": "taskpool-mono"}),
        help_text=_(
            'For example {"failure_percentage": 20, "min_executed": 10, "on": ["failed"]}.'
        ),
    )
    not_before = forms.CharField(
        required=False,
        label=_("Not before (UTC)"),
        help_text=_("Pending for no device before then: 2026-06-03T12:00:00Z. Empty: now."),
    )
    #: Sent back with the form, so a second click stores nothing new.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False)
    #: Shown once the form repeats the task this person sent last (see ``repeats``).
    send_again = forms.BooleanField(
        required=False,
        label=_("Send it again"),
        help_text=_("Send a second task like the one sent last, to run a second time."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", f"admin-{uuid.uuid4().hex}")

    def api_request(self) -> dict[str, Any]:
        """The fields as the JSON body of ``POST /pool/task`` would carry them.

        A field that failed its own cleaning (``meta`` that is not JSON) is left out.
        """
        data = self.cleaned_data
        request: dict[str, Any] = {
            name: data[name] for name in ("to", "title", "body") if name in data
        }
        if data.get("meta", "").strip():
            request["meta"] = strict_loads(data["meta"])  # checked in clean_meta
        ttl = data.get("ttl", "").strip()
        if ttl:
            # Whole numbers as JSON would carry them; anything else as the string
            # it is, so the API's own rule refuses it with the API's message.
            request["ttl"] = int(ttl) if _INTEGER.fullmatch(ttl) else ttl
        if data.get("mode"):
            request["mode"] = data["mode"]
        for name in JOB_FIELDS:
            if data.get(name, "").strip():
                request[name] = strict_loads(data[name])  # checked in clean_<name>
        if data.get("not_before", "").strip():
            request["not_before"] = data["not_before"].strip()
        return request

    def clean_meta(self) -> str:
        return _json_text(self.cleaned_data["meta"])

    def clean_retries(self) -> str:
        return _json_text(self.cleaned_data["retries"])

    def clean_timeout(self) -> str:
        return _json_text(self.cleaned_data["timeout"])

    def clean_rollout(self) -> str:
        return _json_text(self.cleaned_data["rollout"])

    def clean_abort(self) -> str:
        return _json_text(self.cleaned_data["abort"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        key = cleaned.get("idempotency_key")
        if key and not IDEMPOTENCY_KEY_RE.fullmatch(key):  # the API's own rule, above the form
            self.add_error(
                None, _("The form's key was changed: reload the page and send it again.")
            )
        serializer = TaskRequestSerializer(data=self.api_request())
        if serializer.is_valid():
            if not self.errors:
                cleaned["task"] = serializer.validated_data
        else:
            for field, messages in field_errors(serializer.errors).items():
                if field not in self.errors:
                    self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def idempotency(self) -> str | None:
        return self.cleaned_data.get("idempotency_key") or None

    def fingerprint(self) -> str:
        """What the task asks for, whatever its key: the same for a form sent again."""
        request = json.dumps(self.cleaned_data["task"], sort_keys=True, default=str)
        return hashlib.sha256(request.encode()).hexdigest()

    def repeats(self, last_sent: dict[str, Any] | None, now: float) -> bool:
        """Whether this asks, under another key, for the task ``last_sent`` was, moments ago.

        Back after sending shows the form again, filled in by the browser but with a new
        key: sent again, it would make a second task, which a device runs a second time.
        It is held for a confirmation (``send_again``).
        """
        return (
            last_sent is not None
            and not self.cleaned_data.get("send_again")
            and last_sent.get("fingerprint") == self.fingerprint()
            and last_sent.get("key") != self.idempotency()
            and now - float(last_sent.get("at", 0)) < REPEAT_WINDOW_SECONDS
        )

    def refused(self, error: PoolError) -> None:
        """Show a store's refusal on the field it names (or the whole form)."""
        self.add_error(error.field if error.field in self.fields else None, error.message)


#: How long after sending a task the same form is held for a confirmation.
REPEAT_WINDOW_SECONDS = 600

#: The job options the form takes as JSON (``taskpool.jobs``).
JOB_FIELDS = ("retries", "timeout", "rollout", "abort")


def _json_text(text: str) -> str:
    """``text`` if it is empty or JSON as the API parses it; the error a person can act on."""
    if text.strip():
        try:
            strict_loads(text)
        except ValueError as error:
            raise forms.ValidationError(
                _("Not valid JSON: %(error)s."), params={"error": error}
            ) from None
    return text


class CancelTaskForm(forms.Form):
    """Why a task is taken back; written as the cancelling response's body."""

    reason = forms.CharField(required=False, strip=True, max_length=2000, label=_("Reason"))
