"""Closed sets of string choices in the config schemas: enums that OmegaConf checks when it composes.

    Optimizer = Choice("Optimizer", "adam rmsprop")
    optimizer: Optimizer = Optimizer.adam    # a Config field: `agent.optimizer=sgd` fails to compose,
                                             # naming the key, the value and the allowed ones

Each member's name is its value: the string users type in YAML and on the command line (OmegaConf
looks members up by name; a name need not be an identifier: Choice("Normalize", ["01", "tanh"])).
A member is that string in every way code sees it (==, hashing, str, format and repr), so a Config
behaves the same whether it was composed (members) or rebuilt from a checkpoint's stored config,
which holds plain strings (scripts/train.py stores it with enum_to_str).
"""
import enum


class Choice(enum.StrEnum):
    __repr__ = str.__repr__  # 'adam' in messages, as the plain string of a stored config prints

    @staticmethod
    def _generate_next_value_(name, start, count, last_values):
        return name  # StrEnum's would lower-case it
