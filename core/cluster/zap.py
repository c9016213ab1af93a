"""CURVE helpers for the cluster layer: re-exported from core/comm/curve.py (their home,
so the comm layer can secure its sockets without importing the cluster layer)."""

from core.comm.curve import (  # noqa: F401
    AllowFn,
    CurveClientConfig,
    CurveServerConfig,
    Keys,
    ZapGuard,
    make_curve_client,
    make_curve_server,
    peer_key,
)
