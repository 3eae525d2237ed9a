import cProfile
import io
import os
import pstats
import time

import pytest

from tests.agents.test_turn_runner import admit_turn, run
from tests.stub_llm import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.skipif(not os.environ.get("PROF_TMP"), reason="tmp")]


def test_profile(alice, stub_llm):
    stub_llm.script(*[Reply(content=f"answer {n} with some words") for n in range(400)])
    for n in range(30):
        run(admit_turn(alice, f"warm question number {n} about apples"))
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    for n in range(150):
        run(admit_turn(alice, f"measured question number {n} about pears and other things"))
    profile.disable()
    profile.dump_stats("/tmp/prof/turn.prof")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(70)
    stats.sort_stats("tottime").print_stats(40)
    with open("/tmp/prof/turn.txt", "w") as f:
        f.write(out.getvalue())
