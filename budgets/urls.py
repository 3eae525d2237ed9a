from django.urls import path

from budgets import api

urlpatterns = [
    path("budgets", api.BudgetsView.as_view(), name="budgets"),
    path("pricing", api.PricingView.as_view(), name="pricing"),
    path("usage", api.UsageView.as_view(), name="usage"),
    path("audit", api.AuditView.as_view(), name="audit"),
    path("keys", api.KeysView.as_view(), name="keys"),
    path("keys/<str:key_id>", api.KeyView.as_view(), name="key"),
    path("keys/<str:key_id>/rotate", api.KeyRotateView.as_view(), name="key-rotate"),
]
