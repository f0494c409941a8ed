"""A stand-in for Ray, put on the path only of the subprocesses that import the ``serverless-llm``
0.8.0 package (``tests/reference_sllm.py``).

The package imports ``ray`` at module level, but the code these tests call (the ``sllm`` client
commands and ``StorageAwareScheduler.schedule`` without migration) never uses it. Anything that
would reach a Ray cluster fails loudly, so a test cannot pass by touching this stand-in.
"""

from ray import actor, exceptions  # noqa: F401  (the package reads ray.actor and ray.exceptions)


class StandInError(RuntimeError):
    """Raised by every Ray call: the reference code under test was expected not to make any."""


def _refuse(name):
    def call(*args, **kwargs):
        raise StandInError(f"ray.{name} called: the reference code under test needs a Ray cluster here")

    call.__name__ = name
    return call


init = _refuse("init")
is_initialized = _refuse("is_initialized")
shutdown = _refuse("shutdown")
remote = _refuse("remote")
get = _refuse("get")
get_actor = _refuse("get_actor")
nodes = _refuse("nodes")
available_resources = _refuse("available_resources")
