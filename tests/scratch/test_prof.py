import cProfile
import pstats
import time

import pytest

from agents import runner
from tests.agents.test_turn_runner import admit_turn
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def test_profile(alice, stub_llm):
    n = 150
    stub_llm.script(*[Reply(content=f"answer number {i} is here") for i in range(n + 5)])
    for i in range(5):
        t = admit_turn(alice, f"warm {i}")
        runner.execute(runner.claim(t.id))
    turns = [admit_turn(alice, f"question {i} about things") for i in range(n)]
    stages = {"claim": 0.0, "execute": 0.0}
    prof = cProfile.Profile(time.thread_time)
    for t in turns:
        a = time.thread_time()
        pass
        r = runner.claim(t.id)
        b = time.thread_time()
        runner.execute(r)
        pass
        c = time.thread_time()
        stages["claim"] += b - a
        stages["execute"] += c - b
    print({k: round(v / n * 1000, 2) for k, v in stages.items()}, "ms CPU per turn")
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(60)
