"""The review queue: proposals gated by scope and trust, human decisions, trust calibration, feedback.

models.py (records and filters), store.py (in-memory index over the compacted guard.decisions
topic), service.py (ReviewService: gate, decisions, overrides, metrics), consumer.py (reads
crm.proposals into the service; ReviewServices, a mode.Service for the worker).
"""
