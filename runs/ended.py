"""What other apps may hear of a run: that it ended (webhooks listen). A module of its own, as the
dispatcher sends it and runs/signals.py (the receivers of the turns' signal) imports the tasks that
import the dispatcher."""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: run_id (UUID), tenant_id, status (succeeded | failed | cancelled). Sent once, after the commit
# that ended the run, by the process that ended it; best effort, like agents.signals.turn_ended.
run_ended = Signal()
