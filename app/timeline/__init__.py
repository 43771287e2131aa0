"""The collaboration timeline: who changed what on each record, with findings, overrides and decisions.

store.py   TimelineEntry (the entry schema) and TimelineStore (in-memory indexes, queries, retention)
masking.py e-mail and phone masking of values shown to people
log.py     KafkaTimelineLog (the guard.timeline topic the store is rebuilt from) and TimelineRecorder
"""

from app.timeline.store import TimelineEntry, TimelineSettings, TimelineStore, entries_from_event

__all__ = ["TimelineEntry", "TimelineSettings", "TimelineStore", "entries_from_event"]
