"""The git engine: objects, packs, refs, the journal and maintenance.

Nothing here imports LangGraph; the checkpointer (``gitckpt.checkpoint``) and the
store (``gitckpt.store``) are built on it. This is the one folder that talks to
pygit2 and to the files of a repository.
"""
