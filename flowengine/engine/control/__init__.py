"""The coordinator and its control channel to the workers."""
