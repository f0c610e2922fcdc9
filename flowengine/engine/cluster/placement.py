"""What a stage's `placement:` asks Ray for, as plain data and as text (no ray import).

Each replica of a placed stage is one bundle of a Ray placement group: the
resources it reserves on its host for the run (``CPU: 1`` unless the stage
names ``CPU``; custom resources such as ``transcoder: 1``), and the node labels
its host must have. `flowengine plan` prints `describe`; the Ray launcher uses
`bundle_of`.
"""

from __future__ import annotations

__all__ = ["bundle_of", "describe", "format_resources", "format_labels"]


def bundle_of(placement: dict) -> dict[str, float]:
    """What each replica reserves: CPU 1 unless `resources` names CPU, zeros left out."""
    bundle = {"CPU": 1.0, **placement.get("resources", {})}
    return {name: float(amount) for name, amount in bundle.items() if amount > 0}


def format_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def format_labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}"


def describe(placement: dict) -> str:
    """'resources {CPU: 1, node_a: 1} per replica, on hosts labelled {role: a}, spread over
    hosts': what a stage asks Ray for."""
    text = f"resources {format_resources(bundle_of(placement))} per replica"
    if placement.get("labels"):
        text += f", on hosts labelled {format_labels(placement['labels'])}"
    return text + (", spread over hosts" if placement.get("spread") else "")
