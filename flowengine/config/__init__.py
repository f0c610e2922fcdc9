"""Run descriptions: YAML with line numbers, the pydantic model, validation against the registry."""
