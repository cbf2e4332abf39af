"""otel-bridge: OpenTelemetry traces of AI agents → cost and latency analytics, Observatory and FlightDeck events."""

from otel_bridge.inprocess import FlightDeckSpanExporter, ObservatorySpanExporter, install, track_event
from otel_bridge.processors.sdk import BridgeLogProcessor, BridgeSpanProcessor

__version__ = "0.1.0"
__all__ = [
    "BridgeLogProcessor",
    "BridgeSpanProcessor",
    "FlightDeckSpanExporter",
    "ObservatorySpanExporter",
    "install",
    "track_event",
]
