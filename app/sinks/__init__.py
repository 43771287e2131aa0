"""Alert sinks (Slack, PagerDuty, generic webhook), routing, and the delivery service with its outbox.

Each sink builds the vendor's payload with a pure function (testable without HTTP) and sends it
with aiohttp; `delivery.DeliveryService` queues, retries, throttles and records every delivery.
"""
