"""The server side of run sync: :mod:`.generator` publishes the sync manifest."""
