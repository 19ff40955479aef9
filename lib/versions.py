"""CNI spec versions: which exist, how they compare, what each allows."""

CURRENT = "1.1.0"
ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_CONFIG_VERSION = "0.1.0"  # what libcni assumes when cniVersion is absent


def parse(version: str) -> tuple[int, int, int]:
    """'0.3.1' -> (0, 3, 1); ValueError for anything that is not X.Y.Z."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {version!r}: expected X.Y.Z")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, floor: str) -> bool:
    return parse(version) >= parse(floor)
