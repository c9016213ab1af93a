"""Processes and ranks: the cluster on this machine (LocalCluster), how a rank is started
(RankHost: a local process, or a device through core/cluster) and a worker rank's process.
The model maths they run live in core/engine."""
