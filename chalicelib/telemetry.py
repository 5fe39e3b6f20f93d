"""Structured logging shared by the handlers.

Logs are JSON lines (Powertools Logger) with the run id, entity and step, and never a record's
payload at INFO: payloads may hold personal data.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

SERVICE = "moovitamix"
"""Logger name; not the Chalice app name, whose logger Chalice sets to ERROR."""

logger = Logger(service=SERVICE)
