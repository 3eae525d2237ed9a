"""Pagination for list endpoints."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import pagination
from rest_framework.exceptions import NotFound

from sentinel_site.params import IntegerParam


class CursorPagination(pagination.CursorPagination):
    """Stable cursor pages, newest first; `?limit=` from 1 to 200 (anything else is a 400)."""

    ordering = "-created_at"
    page_size_query_param = "limit"
    max_page_size = 200

    @property
    def limit(self) -> IntegerParam:
        return IntegerParam(self.page_size_query_param, 1, self.max_page_size, self.page_size)

    def get_page_size(self, request):
        return self.limit.read(request)

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError):
            # A cursor DRF could decode whose position is no value of the ordering field (forged, or
            # from another list): as invalid as one it could not decode.
            raise NotFound(self.invalid_cursor_message) from None

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = self.limit.schema()
        return parameters
