"""Views of the example: one plain Django view, two Django REST framework views."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokenguard.django import claims_of, requires
from tokenguard.rest_framework import scopes_required


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@requires("library-api-checked-books")
def books(request: HttpRequest) -> JsonResponse:
    claims = claims_of(request)
    assert claims is not None  # requires() guarantees it
    return JsonResponse({"user": claims.subject, "scopes": sorted(claims.scopes)})


class Loans(APIView):
    """DRF: ScopePermission (the default permission class) reads required_scopes."""

    required_scopes = ["library-api-loans"]

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.username, "scopes": sorted(request.auth.scopes)})


class Me(APIView):
    """DRF: a permission class made for one view."""

    permission_classes = [scopes_required("profile")]

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.username, "client": request.auth.client_id})
