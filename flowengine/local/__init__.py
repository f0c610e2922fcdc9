"""Running a pipeline or a run config in one process (the reference semantics)."""
