"""Which stages may have `restart: on-failure`: one rule for the validator and the planner.

A replacement worker takes over a replica's streams in the middle, so it must
have an input to resume from and an output that can take a stream's second
part: sources (they would produce their streams again from the start),
sinks (a file would be rewritten from the middle), multi-input stages (a mix
cannot be resumed from one input) and ordered stages, or stages feeding one
(their order numbering would restart), are refused.
"""

from __future__ import annotations

__all__ = ["RESTART_POLICIES", "restart_problem"]

RESTART_POLICIES = ("never", "on-failure")


def restart_problem(*, has_input: bool, has_output: bool, multi_input: bool, ordered: bool,
                    feeds_ordered: bool) -> str | None:
    """Why a stage cannot have `restart: on-failure`, or None when it can."""
    if not has_input:
        return ("a source cannot be restarted: a new worker would produce its streams again "
                "from the start")
    if not has_output:
        return ("a sink cannot be restarted: a new worker would rewrite its outputs from the "
                "middle of their streams")
    if multi_input:
        return "a multi-input stage (a mix) cannot be restarted: it cannot resume one input"
    if ordered or feeds_ordered:
        what = "an ordered stage" if ordered else "a stage that feeds an ordered stage"
        return (f"{what} cannot be restarted: the order numbering of its streams would "
                f"start again")
    return None
