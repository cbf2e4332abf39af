"""Shared fixtures: the strict Observatory sink and the real FlightDeck server."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from flightdeck_server import flightdeck_server  # noqa: E402,F401
from observatory_sink import observatory_sink  # noqa: E402,F401

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
