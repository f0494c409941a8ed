"""``ray.exceptions`` of the stand-in: the one exception class the reference's server module catches."""


class RayTaskError(Exception):
    """Never raised here; the reference names it in an ``except`` clause."""
