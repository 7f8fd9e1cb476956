"""The embedded SQLite evidence store of a run folder."""
