"""The stage core: what any runtime needs to run operators as stages: node per stage, fusion, the sample audit, signals."""
