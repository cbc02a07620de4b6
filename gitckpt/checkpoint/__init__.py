"""The checkpointer: its commit format, the thread indexes and ``GitSaver``.

``format`` and ``index`` import no LangGraph, so the CLI's ``log`` and ``threads``
stay fast; ``saver`` is the LangGraph ``BaseCheckpointSaver``.
"""
