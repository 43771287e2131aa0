"""Brokers the guard can start itself: the embedded tansu broker (run/demo) and Apache Kafka (tests)."""
