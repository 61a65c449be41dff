"""The one way a config section becomes its trainer's Config object."""
import dataclasses
import typing


def plain(section):
    """A config section (OmegaConf node, dict or dataclass) as plain dicts and lists."""
    if hasattr(section, "_metadata"):  # an OmegaConf node, without importing omegaconf for plain dicts
        from omegaconf import OmegaConf
        return OmegaConf.to_container(section, resolve=True)
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return dataclasses.asdict(section)
    return section


def config_object(cls, section):
    """`cls` (a Config dataclass, possibly nested) from `section`: a composed node (typed by its
    schema), a plain dict (a checkpoint's stored config, a test) or an instance already. Keys that
    are not fields (Hydra's `_target_`) are left out."""
    if isinstance(section, cls):
        return section
    values = plain(section)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
                value = config_object(hints[f.name], value)
            kwargs[f.name] = value
    return cls(**kwargs)
