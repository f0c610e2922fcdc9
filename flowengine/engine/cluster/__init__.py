"""Workers on the hosts of a cluster: the Ray launcher and the host agent it places per host.

Ray only places processes; the data plane stays ZeroMQ (tcp://, CURVE) and
the coordinator's rules stay in charge (docs/cluster.md):

- ``ray_launcher.py``: the launcher for ``cluster: {engine: ray}``, the only
  module that imports ray (lazily: ``launcher.launcher_for``);
- ``agent.py``: the host agent, one Ray actor per host a run uses, which forks
  that host's workers from its own forkserver and reports their exits;
- ``orphans.py``: preloaded by an agent's forkserver, so its workers die with it;
- ``claims.py``: whole streams per replica across hosts (claims through the coordinator).

Importing this package imports nothing else.
"""
