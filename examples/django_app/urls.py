"""URLs of the example Django project."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("books", views.books),
    path("loans", views.Loans.as_view()),
    path("me", views.Me.as_view()),
]
