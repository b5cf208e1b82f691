from calibtune.resources import register_resolvers as _register_resolvers

__version__ = "0.1.0"
_register_resolvers()  # `${calibtune.package_file:...}` in configs (calibtune.resources)


def __getattr__(name: str):
    """Lazy `calibtune.Scorer`, so importing calibtune does not import torch."""
    if name == "Scorer":
        from calibtune.serve.score import Scorer

        return Scorer
    raise AttributeError(f"module 'calibtune' has no attribute {name!r}")
