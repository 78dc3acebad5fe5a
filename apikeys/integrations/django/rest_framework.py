"""API-key authentication for Django REST framework: an authentication class and a scope permission.

Example:
    ``settings.REST_FRAMEWORK`` or per view::

        from apikeys.integrations.django.rest_framework import (
            APIKeyAuthentication, HasAPIKeyScopes, require_scopes,
        )

        class DataView(APIView):
            authentication_classes = [APIKeyAuthentication]
            permission_classes = [require_scopes("read:data")]

            def get(self, request):
                return Response({"user": request.auth.user_id})

``request.auth`` is the :class:`~apikeys.VerifiedKey` (also ``request.api_key``),
``request.user`` an :class:`APIKeyUser`. Refusals are answered with the same
JSON bodies, statuses and headers as everywhere else in apikeys. DRF views are
synchronous, so the sync manager is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from apikeys._errors import APIKeysError, MissingDependencyError, MissingKeyError
from apikeys._keystate import check_scopes
from apikeys._models import VerifiedKey
from apikeys.integrations._authentication import required_scopes, route_cost
from apikeys.integrations._responses import error_response

try:
    from rest_framework.authentication import BaseAuthentication
    from rest_framework.exceptions import APIException
    from rest_framework.permissions import BasePermission
    from rest_framework.request import Request
except ImportError as exc:
    raise MissingDependencyError("rest_framework", "drf") from exc

# The Django adapter: imported once Django REST framework (and so Django) is known to be there.
from apikeys.integrations.django._extension import APIKeys

if TYPE_CHECKING:
    # rest_framework.views reads settings.REST_FRAMEWORK when imported: not at import time here.
    from rest_framework.response import Response
    from rest_framework.views import APIView


class APIKeyException(APIException):
    """A refusal, carrying the core's status, JSON body and headers into DRF.

    DRF's exception handler answers with ``detail`` as the body, ``auth_header``
    as ``WWW-Authenticate`` and ``wait`` as ``Retry-After``.
    """

    def __init__(self, error: APIKeysError, keys: APIKeys) -> None:
        core = error_response(error, keys.settings)
        super().__init__(detail=error.message, code=error.code)
        self.status_code = core.status
        # Set after __init__, which would turn every value (retryAfter too) into a string.
        self.detail = dict(core.body or {})
        headers = dict(core.headers)
        self.auth_header = headers.get("WWW-Authenticate")
        retry_after = headers.get("Retry-After")
        self.wait = int(retry_after) if retry_after else None


class APIKeyUser:
    """The ``request.user`` of a request authenticated by API key.

    Not a database user: ``pk``, ``id`` and ``username`` are the key's owner
    id, so DRF's per-user throttles and ``IsAuthenticated`` work. Override
    :meth:`APIKeyAuthentication.get_user` to map keys to your user model.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: VerifiedKey) -> None:
        self.api_key = api_key
        self.pk = self.id = self.username = api_key.user_id

    def get_username(self) -> str:
        """The owner's user id."""
        return self.username

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"APIKeyUser({self.username!r}, key_id={self.api_key.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, APIKeyUser) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)


def _view_cost(request: Request) -> int:
    """What the view answering ``request`` costs: the highest ``cost`` of its
    :class:`HasAPIKeyScopes` permissions, so that authentication charges it all at once."""
    view = (request.parser_context or {}).get("view")
    permissions = view.get_permissions() if view is not None else ()
    costs = [p.cost for p in permissions if isinstance(p, HasAPIKeyScopes)]
    return max(costs, default=1)


class APIKeyAuthentication(BaseAuthentication):
    """Authenticate DRF requests by API key: ``(user, VerifiedKey)``.

    A request without a key is left to the next authentication class (DRF's
    convention); a refused key is answered at once (403, or 401 with
    ``invalid_key_status=401``). A key the Django middleware already verified
    is reused without asking the backend again.
    """

    def authenticate(self, request: Request) -> tuple[Any, VerifiedKey] | None:
        """Verify the request's key; ``None`` if it sent none."""
        keys = APIKeys.current()
        try:
            verified = keys.authenticate(request._request, (), _view_cost(request))
        except MissingKeyError:
            return None
        except APIKeysError as exc:
            raise APIKeyException(exc, keys) from None
        return self.get_user(verified), verified

    def get_user(self, api_key: VerifiedKey) -> Any:
        """The ``request.user`` for a verified key; an :class:`APIKeyUser` by default."""
        return APIKeyUser(api_key)

    def authenticate_header(self, request: Request) -> str:
        """The ``WWW-Authenticate`` challenge, so DRF answers 401 (not 403) without a key."""
        keys = APIKeys.current()
        return dict(error_response(MissingKeyError(), keys.settings).headers)["WWW-Authenticate"]


class HasAPIKeyScopes(BasePermission):
    """Allow requests authenticated by API key that hold the required scopes.

    The scopes are the class's ``required_scopes`` (see :func:`require_scopes`)
    or, when it has none, the view's ``required_scopes`` attribute. Refusals
    use the apikeys bodies: 401 ``missing_api_key`` without a key, 403
    ``insufficient_scope`` with ``missingScopes``.

    ``cost`` is what a call spends from the key's rate limit and quota (1 to
    10**12), once per request: :class:`APIKeyAuthentication` charges it all
    (after the Django middleware's unit, when that verified the key first; the
    permission then charges what is left). Over the key's limits: 429 with
    ``Retry-After``.
    """

    required_scopes: ClassVar[tuple[str, ...]] = ()
    cost: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check a subclass's ``required_scopes`` when it is declared.

        Raises:
            ConfigurationError: ``None``, a blank string, or a blank,
                malformed or wildcard scope.
        """
        super().__init_subclass__(**kwargs)
        if "required_scopes" in cls.__dict__:
            cls.required_scopes = required_scopes(cls.__dict__["required_scopes"])
        if "cost" in cls.__dict__:
            cls.cost = route_cost(cls.__dict__["cost"])

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Check the key and its scopes; raise the apikeys refusal otherwise."""
        keys = APIKeys.current()
        try:
            scopes = self.required_scopes or required_scopes(getattr(view, "required_scopes", ()))
            verified = request.auth
            if not isinstance(verified, VerifiedKey):
                # Say why exactly, as the other adapters do (a query-string key
                # while those are off…); another authentication may have won.
                keys.credentials(request._request).credential(keys.settings)
                raise MissingKeyError()
            check_scopes(verified, scopes)
            if self.cost > 1:
                keys.authenticate(request._request, scopes, self.cost)
        except APIKeysError as exc:
            raise APIKeyException(exc, keys) from None
        return True


def require_scopes(*scopes: str | Iterable[str], cost: int = 1) -> type[HasAPIKeyScopes]:
    """A :class:`HasAPIKeyScopes` requiring ``scopes``: ``permission_classes = [require_scopes("read:data")]``.

    Each argument is one scope or a sequence of scopes; ``require_scopes()``
    requires none. ``cost`` is what a call spends from the key's limits
    (``require_scopes("read:data", cost=5)``).

    Raises:
        ConfigurationError: ``None``, a blank string, or a blank, malformed
            or wildcard scope; a cost that is not from 1 to 10**12.
    """
    flattened: list[str] = []
    for scope in scopes:
        # A string is one scope (a blank one is refused); anything else is checked whole.
        flattened.extend([scope] if isinstance(scope, str) else required_scopes(scope))
    needed = required_scopes(flattened)
    name = "HasAPIKeyScopes[" + " ".join(needed) + "]"
    return type(name, (HasAPIKeyScopes,), {"required_scopes": needed, "cost": route_cost(cost)})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler that also answers apikeys errors raised in views.

    Set ``REST_FRAMEWORK["EXCEPTION_HANDLER"] =
    "apikeys.integrations.django.rest_framework.exception_handler"`` so that a
    view raising :class:`~apikeys.RateLimitedError`, :class:`~apikeys.KeyNotFoundError`…
    answers with the same JSON as the rest of apikeys.
    """
    from rest_framework.views import exception_handler as default_handler

    if isinstance(exc, APIKeysError):
        exc = APIKeyException(exc, APIKeys.current())
    response = default_handler(exc, context)
    request = context.get("request")
    if response is not None and isinstance(request, Request):
        APIKeys.with_rate_limit_fields(request._request, response)
    return response


__all__ = [
    "APIKeyAuthentication",
    "APIKeyException",
    "APIKeyUser",
    "HasAPIKeyScopes",
    "exception_handler",
    "require_scopes",
]
