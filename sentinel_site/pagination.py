"""Pagination for list endpoints."""

from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Stable cursor pages, newest first; `?limit=` up to 200."""

    ordering = "-created_at"
    page_size_query_param = "limit"
    max_page_size = 200
