"""What other apps may hear of a turn's life, sent after the commit that decided it.

Receivers run in the process that ended the turn (a worker, or the Supervisor's sweep) and must
stay cheap and best effort: what they react to is already durable in the Turn row, so anything
that must not be missed also has a sweep of its own over that row.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: turn_id (UUID), status ("succeeded" | "failed"), tenant_id, idempotency_key (the turn's, or None: lets a
# receiver skip turns that are not its own without a query). Sent once per ended attempt that won its fence.
turn_ended = Signal()
