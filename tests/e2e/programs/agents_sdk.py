"""A client program built on the OpenAI Agents SDK, pointed at Sentinel: `python agents_sdk.py BASE_URL KEY SCENARIO`.

The SDK's package is named `agents`, as is Sentinel's agents app, so it cannot be imported inside
the test process: the tests run this program in its own interpreter, from outside the checkout, and
read the JSON it prints.
"""

from __future__ import annotations

import asyncio
import json
import sys

from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def main(base_url: str, key: str, scenario: str) -> dict:
    set_tracing_disabled(True)  # the SDK would export its traces to OpenAI's own servers
    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    model = OpenAIChatCompletionsModel(model="helper", openai_client=client)
    if scenario == "tool":
        agent = Agent(name="forecaster", instructions="You tell the weather.", model=model, tools=[weather])
        result = await Runner.run(agent, "Weather in Oslo?")
        return {"final_output": result.final_output, "last_agent": result.last_agent.name}
    if scenario == "handoff":
        billing = Agent(name="billing", instructions="You answer billing questions.", model=model)
        triage = Agent(name="triage", instructions="You route questions.", model=model, handoffs=[billing])
        result = await Runner.run(triage, "Is my invoice paid?")
        return {"final_output": result.final_output, "last_agent": result.last_agent.name}
    if scenario == "stream":
        agent = Agent(name="plain", instructions="Be brief.", model=model)
        streamed = Runner.run_streamed(agent, "go")
        deltas = [
            event.data.delta
            async for event in streamed.stream_events()
            if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)
        ]
        return {"deltas": deltas, "final_output": streamed.final_output}
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
