"""Shared fixtures: the strict Observatory sink and the real FlightDeck server."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from flightdeck_server import flightdeck_server  # noqa: E402,F401
from observatory_sink import observatory_sink  # noqa: E402,F401

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
# The reference fixtures (one OpenAI agent run under each instrumentation library) that the tests below were
# written for.  The agent-framework fixtures (issue 9: <name>.expected.json with a "producer") have their own
# manifest and are asserted by their own tests.
REFERENCE_FIXTURES = ("openai_v2", "openai_v2_content", "openai_v2_prev", "openinference", "openllmetry")
