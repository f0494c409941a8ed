"""``ray.actor`` of the stand-in: the one name the reference's dataclasses annotate with."""


class ActorHandle:
    """Only used as a type annotation by the reference package."""
