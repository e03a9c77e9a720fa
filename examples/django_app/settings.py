"""Settings of the example Django project (no database: tokens carry the identity)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")  # noqa: S105 - example project
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
DATABASES: dict[str, object] = {}
USE_TZ = True

MIDDLEWARE = ["tokenguard.django.TokenGuardMiddleware"]

# The guard: built from these settings, or named by TOKENGUARD_GUARD.
TOKENGUARD = {
    "ISSUER": os.environ.get("TOKENGUARD_ISSUER", "https://idp.example.com/oidc"),
    "AUDIENCE": os.environ.get("TOKENGUARD_AUDIENCE", "https://api.example.com"),
    "CLIENT_ID": os.environ.get("TOKENGUARD_CLIENT_ID"),
    "CLIENT_SECRET": os.environ.get("TOKENGUARD_CLIENT_SECRET"),
}
# Nothing is public unless named here.
TOKENGUARD_PUBLIC_PATHS = ["/health"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tokenguard.rest_framework.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tokenguard.rest_framework.ScopePermission"],
    "EXCEPTION_HANDLER": "tokenguard.rest_framework.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
