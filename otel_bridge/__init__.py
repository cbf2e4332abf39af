"""otel-bridge: OpenTelemetry traces of AI agents → cost and latency analytics, Observatory and FlightDeck events."""

__version__ = "0.1.0"
