"""Configure Django once per test process, from the example project's settings."""

from __future__ import annotations

import django
from django.conf import settings


def configure_django() -> None:
    """Django reads settings once per process: configure it from examples/django_app/settings.py."""
    if settings.configured:
        return
    from examples.django_app import settings as example

    settings.configure(**{name: getattr(example, name) for name in dir(example) if name.isupper()})
    django.setup()
