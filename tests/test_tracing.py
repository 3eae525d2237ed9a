"""Tracing is off unless an OTLP endpoint is configured, and then it needs its packages.

The traces themselves are checked end to end in tests/e2e/test_tracing.py.
"""

import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from sentinel_site import tracing

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED")


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch):
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    tracing.shutdown()


def _without_opentelemetry(monkeypatch) -> None:
    """As if the packages were not installed: importing any of them fails."""
    for name in [name for name in sys.modules if name.split(".")[0] == "opentelemetry"] + ["opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_an_endpoint_configure_does_nothing_and_the_helpers_are_no_ops(monkeypatch):
    _without_opentelemetry(monkeypatch)  # nothing here may need the packages
    tracing.configure("sentinel-test")
    assert not tracing.is_on()
    with tracing.span("work", "client", {"a": 1}, parent_traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") as span:
        span.set_attribute("b", 2)
        span.rename("other work")
        span.fail("boom", ValueError("boom"))
        assert span.trace_id == ""
        assert tracing.current_traceparent() == ""
        assert tracing.outgoing_headers() == {}
    with pytest.raises(ValueError), tracing.span("failing"):
        raise ValueError("an exception leaves the block as it came")


def test_an_endpoint_with_the_sdk_disabled_keeps_tracing_off(monkeypatch):
    _without_opentelemetry(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.configure("sentinel-test")
    assert not tracing.is_on()


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_an_endpoint_without_the_packages_stops_start_up_naming_the_requirements_file(monkeypatch, variable):
    _without_opentelemetry(monkeypatch)
    monkeypatch.setenv(variable, "http://127.0.0.1:4318")
    with pytest.raises(ImproperlyConfigured, match=r"pip install -r requirements-otel\.txt"):
        tracing.configure("sentinel-test")
    assert not tracing.is_on()
