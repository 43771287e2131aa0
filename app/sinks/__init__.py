"""Alert sinks (Slack, PagerDuty, generic webhook), routing, and the delivery service with its outbox.

Each sink builds the vendor's payload with a pure function (testable without HTTP) and sends it
with aiohttp; `delivery.DeliveryService` queues, retries, throttles and records every delivery in
the table of `delivery_log`; `alert_feed.AlertFeed` feeds it from guard.alerts, and
`alert_feed.build_delivery` assembles all of it from the settings.
"""
