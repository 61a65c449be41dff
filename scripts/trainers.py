"""Which module trains what, derived from the config groups (no hand-kept registry).

A trainer is a module with a `Config` dataclass (its hyperparameters, typed, with their defaults and
a `validate()`) and `train(cfg, run) -> metrics`. Its config file, `conf/agent/<name>.yaml` or
`conf/model/<name>.yaml`, starts with `defaults: [<module>_schema, _self_]`: that line is the whole
registration. The schema is the module's Config with a `_target_` naming it, so a composed
`cfg.agent` / `cfg.model` says which trainer it belongs to and `hydra.utils.instantiate(cfg.agent)` gives
the typed Config object.

Adding an algorithm: `agents/<module>.py` with Config and train, and `conf/agent/<name>.yaml` with
`defaults: [<module>_schema, _self_]` (docs/running.md has a worked example).
"""
import dataclasses
import functools
import importlib
import pkgutil
from pathlib import Path

import yaml

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# the packages whose modules may be trainers, by config group
PACKAGES = {"agent": ("agents", "scripts.book_checks"), "model": ("gans",)}


def _candidate_modules(package):
    module = importlib.import_module(package)
    if not hasattr(module, "__path__"):  # a single module
        return [package]
    return [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__) if not info.name.startswith("_")]


@functools.cache
def schemas():
    """{(group, "<module>_schema"): schema dataclass} of every trainer module."""
    found = {}
    for group, packages in PACKAGES.items():
        for package in packages:
            try:
                names = _candidate_modules(package)
            except ModuleNotFoundError:
                continue
            for name in names:
                module = importlib.import_module(name)
                config = getattr(module, "Config", None)
                if dataclasses.is_dataclass(config) and callable(getattr(module, "train", None)):
                    short = name.rsplit(".", 1)[-1]
                    found[group, f"{short}_schema"] = _with_target(config)
    return found


def _with_target(config):
    """`config` with a `_target_` field naming it (Hydra's convention for what a node instantiates)."""
    target = f"{config.__module__}.{config.__qualname__}"
    return dataclasses.make_dataclass(config.__name__, [("_target_", str, dataclasses.field(default=target))],
                                      bases=(config,))


def register():
    """Put every trainer's schema into Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore
    store = ConfigStore.instance()
    for (group, name), node in schemas().items():
        store.store(group=group, name=name, node=node)


def options(group):
    """{option: trainer module} of a config group: each conf/<group>/<option>.yaml names its schema."""
    by_schema = {name: node for (g, name), node in schemas().items() if g == group}
    found = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
        schema = next((d for d in defaults if isinstance(d, str) and d.endswith("_schema")), None)
        if schema in by_schema:
            found[path.stem] = importlib.import_module(by_schema[schema].__mro__[1].__module__)
    return found

