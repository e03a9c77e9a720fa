"""A Django project protected by tokenguard: plain Django views and Django REST framework views.

Run against your own provider::

    TOKENGUARD_ISSUER=https://idp.example.com/oidc TOKENGUARD_AUDIENCE=https://api.example.com \
        DJANGO_SETTINGS_MODULE=examples.django_app.settings python -m django runserver
"""
