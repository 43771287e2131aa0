"""The guard's HTTP side: metrics, health, alerts and agents API, webhook receiver, and pages."""
