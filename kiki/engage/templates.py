"""Message templates: sandboxed Jinja2, personalised with a customer's attributes, LTV and
churn risk.

Templates run in `jinja2.sandbox.SandboxedEnvironment` (no attribute access to Python
internals, no unsafe calls), with `StrictUndefined` so a template that names something the
context lacks fails loudly instead of sending "Hi ,". A template may guard optional values
with `{% if ltv %}`; unpersonalised messages get only the generic context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from kiki.errors import InvalidInput

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)


@dataclass(frozen=True)
class Template:
    """One message in every channel's shape: a subject (email) or title (push, in-app) and a
    body; SMS sends the body alone."""

    subject: str
    body: str


TEMPLATES: dict[str, Template] = {
    "win_back": Template(
        subject="{% if personalized %}{{ first_name or 'Hi' }}, we miss you{% else %}"
        "We miss you{% endif %}",
        body=(
            "{% if personalized %}Hi {{ first_name or 'there' }}, it has been "
            "{% if days_since_last is not none %}{{ days_since_last }} days since your last "
            "order{% else %}a while{% endif %}.{% else %}It has been a while.{% endif %} "
            "Come back for {{ offer or '15% off' }} your next order."
            "{% if personalized and churn_risk is not none and churn_risk >= 0.7 %} "
            "This one is just for you.{% endif %}"
        ),
    ),
    "welcome": Template(
        subject="Welcome{% if personalized and first_name %}, {{ first_name }}{% endif %}!",
        body="Thanks for your first order. Here is what's new this week.",
    ),
    "vip_thanks": Template(
        subject="Thank you{% if personalized and first_name %}, {{ first_name }}{% endif %}",
        body=(
            "You are one of our best customers"
            "{% if personalized and ltv %} (we expect to see {{ ltv }} {{ currency }} of "
            "orders from you){% endif %}. Enjoy early access to our next launch."
        ),
    ),
}


def generic_context(variables: dict[str, str]) -> dict[str, Any]:
    """What every render sees: the caller's variables, and no customer data."""
    return {
        "personalized": False,
        "first_name": None,
        "days_since_last": None,
        "churn_risk": None,
        "ltv": None,
        "currency": None,
        "attributes": {},
        "offer": None,
        **variables,
    }


_COMPILED = {
    name: (_ENV.from_string(t.subject), _ENV.from_string(t.body)) for name, t in TEMPLATES.items()
}


def render(name: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of template `name` for the context."""
    if name not in _COMPILED:
        raise InvalidInput(f"no template {name!r}; use one of {', '.join(sorted(TEMPLATES))}")
    subject_template, body_template = _COMPILED[name]
    try:
        subject = subject_template.render(context)
        body = body_template.render(context)
    except TemplateError as exc:
        raise InvalidInput(f"template {name!r} could not be rendered: {exc}") from None
    return subject.strip(), " ".join(body.split())
