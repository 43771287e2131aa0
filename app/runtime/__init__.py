"""The streaming runtime: batch consumers per stage, partitioned state with changelogs, commits
after effects. See docs/ARCHITECTURE.md for the topology."""
