"""The web server as deployed (uvicorn, tests/conftest.py's live stack) takes the client's address
from the connection: only Sentinel decides which proxies' X-Forwarded-For to believe."""

import httpx
import pytest

from budgets.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_forwarded_address_is_not_believed_from_a_local_peer(live_stack):
    """The audit entry of a failed authentication names the connection's address, not a claimed one."""
    response = httpx.get(
        f"{live_stack.api}/models", headers={"Authorization": "Bearer snt_nosuchkeyid_" + "A" * 43, "X-Forwarded-For": "203.0.113.77"}
    )
    assert response.status_code == 401
    entry = AuditEntry.objects.filter(action="auth.failed").order_by("-seq").first()
    assert entry is not None and entry.data["ip"] == "127.0.0.1", entry.data if entry else None
