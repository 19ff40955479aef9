"""mh-ipam's plugin-specific CNI error codes (100 and up belong to plugins)."""

POOL_EXHAUSTED = 110
IP_OUT_OF_RANGE = 111
IP_UNAVAILABLE = 112
CHECK_FAILED = 120
