"""Running the stages on a Ray cluster (``--ray ADDRESS``): the only package that imports Ray.

Nothing here is imported unless a command is given ``--ray`` (or the config sets ``ray.address``); the
modules are imported by the commands that need them: :mod:`leanml.cluster.prepare`,
:mod:`leanml.cluster.train`, :mod:`leanml.cluster.tune`, :mod:`leanml.cluster.predict`.
"""
