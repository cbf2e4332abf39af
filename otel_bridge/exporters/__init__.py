"""Exporters: one batching engine (``batch``) and the senders it drives."""
