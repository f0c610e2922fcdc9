"""The `flowengine` command and what it prints."""
