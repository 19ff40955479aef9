"""mh-ipam's plugin-specific CNI error codes (100 and up belong to plugins)."""

from multihome.lib.errors import CHECK_FAILED

POOL_EXHAUSTED = 110
IP_OUT_OF_RANGE = 111
IP_UNAVAILABLE = 112

__all__ = ["CHECK_FAILED", "IP_OUT_OF_RANGE", "IP_UNAVAILABLE", "POOL_EXHAUSTED"]
