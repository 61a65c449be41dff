"""`Parameter` and `Module`: the building blocks of every network.

Registration: assigning an attribute registers it by the type of the value.

- a `Parameter` becomes a parameter, a `Module` a submodule;
- a plain `Tensor` is an ordinary attribute unless registered with `register_buffer` (running statistics
  and other state that is saved but not trained);
- a non-empty list or tuple whose items are all Modules is converted to a `ModuleList` (all Parameters:
  a `ParameterList`), a non-empty dict of Modules to a `ModuleDict` (of Parameters: a `ParameterDict`).
  The attribute then holds the container, not the original list, so later appends must go to
  `self.<name>` (`self.layers.append(...)`); an empty list stays a plain list. A list that mixes
  Modules with other values is an error (those Modules would silently not be trained).

Registered values are also stored in the instance `__dict__`, so reading `self.weight` in `forward` is
a plain attribute lookup. `__call__` is just `forward`: hooks (`register_forward_hook`, used by
`summary`) install an instance-level wrapper only while any are registered, so they cost nothing
otherwise.
"""
import collections
import copy
import itertools
import types
import weakref

import numpy as np

from core import backend
from core.autograd import no_grad
from core.tensor import DeviceShorthands, Tensor, as_tensor, zeros


class Parameter(Tensor):
    """A Tensor that Modules register as a learnable weight. Built from a Tensor (sharing its array) or
    from anything `core.as_tensor` accepts."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        source = data if isinstance(data, Tensor) else as_tensor(data)
        self.data, self.grad, self._ctx, self._version = source.data, None, None, 0
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)  # refuses integer dtypes with a clear message

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
_hook_ids = itertools.count()


class _HookHandle:
    def __init__(self, module, key):
        self._module, self._key = weakref.ref(module), key

    def remove(self):
        module = self._module()
        if module is not None:
            module._forward_hooks.pop(self._key, None)
            if not module._forward_hooks:
                module.__dict__.pop("forward", None)


def _forward_with_hooks(self, *args, **kwargs):
    out = type(self).forward(self, *args, **kwargs)
    for hook in list(self._forward_hooks.values()):
        replaced = hook(self, args, out)
        if replaced is not None:
            out = replaced
    return out


def _container_for(name, value):
    """The container a list/tuple/dict attribute is converted to, or None to keep it as it is."""
    items = list(value.values() if isinstance(value, dict) else value)
    if not items:
        return None
    n_modules = sum(isinstance(v, Module) for v in items)
    n_params = sum(isinstance(v, Parameter) for v in items)
    if n_modules == len(items):
        return ModuleDict(value) if isinstance(value, dict) else ModuleList(value)
    if n_params == len(items):
        return ParameterDict(value) if isinstance(value, dict) else ParameterList(value)
    if n_modules or n_params:
        raise TypeError(f"attribute {name!r} mixes Modules/Parameters with other values, so they would not be "
                        "registered; keep them in separate attributes or use ModuleList/ModuleDict")
    return None


def _check_name(module, name):
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"a parameter, buffer or module name must be a non-empty string without '.', got {name!r}")
    if name == "training" or (hasattr(type(module), name) and name not in module._parameters
                              and name not in module._buffers and name not in module._modules):
        raise KeyError(f"{name!r} is the name of an attribute or method of {type(module).__name__}; "
                       "register the value under another name")


class Module(DeviceShorthands):
    """Base class of layers and models: subclasses call `super().__init__()` first, assign their
    parameters and submodules as attributes, and define `forward`."""

    def __init__(self):
        self.__dict__.update(training=True, _parameters={}, _buffers={}, _non_persistent=set(), _modules={},
                             _forward_hooks={})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- registration -----
    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if params is None:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__(); call super().__init__() first "
                                 f"in {type(self).__name__}.__init__")
        if isinstance(value, Parameter):
            _check_name(self, name)
            self._unregister(name, keep=params)
            params[name] = value
        elif isinstance(value, Module):
            _check_name(self, name)
            self._unregister(name, keep=self._modules)
            self._modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r}: expected a Parameter "
                                "or None")
            params[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}: expected a Tensor or None")
            self._buffers[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r}: expected a Module "
                                "or None")
            self._modules[name] = None
        elif isinstance(value, (list, tuple, dict)):
            container = _container_for(name, value)
            if container is not None:
                _check_name(self, name)
                self._modules[name] = value = container
        d[name] = value

    def __delattr__(self, name):
        self._unregister(name)
        object.__delattr__(self, name)

    def _unregister(self, name, keep=None):
        """Remove `name` from every registry but `keep` (where a reassignment keeps its position)."""
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent.discard(name)

    def _register_as(self, method, registry, cls, name, value):
        """What `method` (register_parameter, register_buffer, add_module) does: `value`, a `cls` or None,
        becomes the attribute `name`, held in `registry` and in no other."""
        _check_name(self, name)
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"{method}({name!r}) needs a {cls.__name__} or None, got {type(value).__name__}")
        self._unregister(name, keep=registry)
        registry[name] = value
        self.__dict__[name] = value

    def register_parameter(self, name, param):
        self._register_as("register_parameter", self._parameters, Parameter, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """State that is saved (unless `persistent=False`) and moved with the module but not trained."""
        self._register_as("register_buffer", self._buffers, Tensor, name, tensor)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        self._register_as("add_module", self._modules, Module, name, module)

    def register_forward_hook(self, hook):
        """Call `hook(module, args, output)` after every forward; a non-None return replaces the output.
        Returns a handle whose `remove()` unregisters it."""
        key = next(_hook_ids)
        self._forward_hooks[key] = hook
        self.__dict__["forward"] = types.MethodType(_forward_with_hooks, self)
        return _HookHandle(self, key)

    # ----- traversal -----
    def named_modules(self, memo=None, prefix=""):
        """(qualified name, module) for this module and every submodule, each module once."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        return (module for _, module in self.named_children())

    def _named_members(self, registry, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        """(qualified name, parameter) pairs; a parameter shared between modules appears once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        return (param for _, param in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        return (buf for _, buf in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        """Call `fn(module)` on every submodule (children first) and on self; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ----- modes and gradients -----
    def train(self, mode=True):
        for module in self.modules():
            module.__dict__["training"] = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad = Tensor._make(param.xp.zeros_like(param.grad.data))

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze (True) every parameter; returns self."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    # ----- devices and dtypes -----
    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to `device` and/or cast the floating ones to `dtype`, in place: the
        Parameter objects stay the same, so references to them stay valid. Returns self. (A core.optim optimizer
        keeps its parameters in its own flat buffer: build it after `to`.)"""
        if isinstance(device, (type, np.dtype)) and dtype is None:
            device, dtype = None, device
        if device is not None:
            backend.array_module(device)  # a clear error before anything moves
        dtype = None if dtype is None else np.dtype(dtype)

        def convert(array):
            if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
                array = array.astype(dtype)
            if device is not None and backend.parse_device(backend.device_of(array)) != backend.parse_device(device):
                array = backend.to_device(array, device)
            return array

        for t in itertools.chain(self.parameters(), self.buffers()):
            new = convert(t.data)
            if new is not t.data:
                t.data = new
                t._version += 1
            if t.grad is not None:
                t.grad = Tensor._make(convert(t.grad.data))
        return self

    # ----- state -----
    def _state_items(self, prefix=""):
        """(key, tensor) for the state dict: own parameters, own persistent buffers, then each child's, in
        registration order. A module or parameter reachable under two names appears under both (as PyTorch)."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent:
                yield prefix + name, buf
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(f"{prefix}{name}.")

    def state_dict(self, keep_vars=False):
        """Ordered {"layer.0.weight": Tensor, ...} of parameters and persistent buffers. The tensors share
        memory with the module (detached unless keep_vars); copy them to keep a snapshot."""
        return collections.OrderedDict(
            (key, t if keep_vars else Tensor._make(t.data)) for key, t in self._state_items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the parameters and buffers. Every missing, unexpected (when strict) and mis-shaped
        key is named in one error, and nothing is changed when it raises. Returns (missing, unexpected)."""
        own = dict(self._state_items())
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        mismatched, converted = [], {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.data if isinstance(value, Tensor) else value
            shape = tuple(getattr(array, "shape", np.shape(array)))
            if shape != target.shape:
                mismatched.append(f"{key} (checkpoint {shape}, model {target.shape})")
                continue
            if not hasattr(array, "dtype"):
                array = np.asarray(array)
            if array.dtype.kind not in "biuf":
                mismatched.append(f"{key} (checkpoint dtype {array.dtype} is not numeric)")
                continue
            converted[key] = backend.to_device(array, target.device).astype(target.dtype, copy=False)
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("mismatched: " + ", ".join(mismatched))
        if problems:
            raise RuntimeError(f"cannot load state dict into {type(self).__name__}: " + "; ".join(problems))
        for key, array in converted.items():
            target = own[key]
            target.data[...] = array
            target._version += 1
        return IncompatibleKeys(missing, unexpected)

    def copy(self):
        """An independent deep copy (e.g. a target network)."""
        return copy.deepcopy(self)

    # ----- counting and summary -----
    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def parameter_counts(self):
        """Keras' counts: trainable parameters, and non-trainable = frozen parameters plus floating-point
        persistent buffers (BatchNorm's running mean and variance; integer counters do not count)."""
        trainable = sum(p.size for p in self.parameters() if p.requires_grad)
        frozen = sum(p.size for p in self.parameters() if not p.requires_grad)
        persistent = {id(t) for _, t in self._state_items()}
        stats = sum(b.size for b in self.buffers() if b.dtype.kind == "f" and id(b) in persistent)
        return {"total": trainable + frozen + stats, "trainable": trainable, "non_trainable": frozen + stats}

    def summary(self, input_shape, dtype=None, print_fn=print):
        """Keras-like table from a dummy forward (eval mode, no graph, batch of 2): one row per layer that holds
        weights or has no sublayers, with its output shape and parameter count (own parameters plus running
        statistics), then total/trainable/non-trainable counts. `input_shape` excludes the batch axis; pass a
        list of shapes for several inputs. The dummy input is zeros of `dtype` (default: the model's float dtype;
        pass an integer dtype for an Embedding). Prints with `print_fn` (None: silent) and returns the text."""
        shapes = list(input_shape) if input_shape and not isinstance(input_shape[0], int) else [input_shape]
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        device = "cpu" if first is None else first.device
        if dtype is None and first is not None and first.dtype.kind == "f":
            dtype = first.dtype
        inputs = [zeros((2, *shape), dtype=dtype, device=device) for shape in shapes]
        rows, handles = [], []

        def record(name):
            def hook(module, args, output):
                own = sum(p.size for p in module._parameters.values() if p is not None)
                own += sum(b.size for key, b in module._buffers.items()
                           if b is not None and b.dtype.kind == "f" and key not in module._non_persistent)
                rows.append((f"{name} ({type(module).__name__})", _format_shape(output), own))
            return hook

        for name, module in self.named_modules():
            if not module._modules or module._parameters or module._buffers:
                handles.append(module.register_forward_hook(record(name or type(module).__name__)))
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with no_grad():
                self(*inputs)
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes:
                module.__dict__["training"] = mode
        counts = self.parameter_counts()
        table = [("Layer (type)", "Output Shape", "Param #")] + [(n, s, f"{p:,}") for n, s, p in rows]
        widths = [max(len(row[i]) for row in table) + 2 for i in range(3)]
        line = lambda row: "".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()  # noqa: E731
        rule = "=" * sum(widths)
        text = "\n".join([f'Model: "{type(self).__name__}"', rule, line(table[0]), rule]
                         + [line(row) for row in table[1:]]
                         + [rule, f"Total params: {counts['total']:,}", f"Trainable params: {counts['trainable']:,}",
                            f"Non-trainable params: {counts['non_trainable']:,}", rule])
        if print_fn is not None:
            print_fn(text)
        return text

    # ----- printing -----
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ") for name, module in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = self.extra_repr()
        return f"{type(self).__name__}(" + ("\n  " + head if head else "") + "\n  " + "\n  ".join(lines) + "\n)"


def _format_shape(output):
    if isinstance(output, Tensor):
        return str((None,) + tuple(output.shape[1:])).replace(",)", ")")
    if isinstance(output, (tuple, list)):
        return "[" + ", ".join(_format_shape(o) for o in output) + "]"
    return type(output).__name__


# ----- containers -----
class _List(Module):
    """The list side shared by Sequential, ModuleList and ParameterList: the entries of the registry that
    `_entries()` gives (submodules unless overridden), in order; `append` registers the next one under
    "0", "1", ... with `_register`."""

    def _entries(self):
        return self._modules

    def _register(self, name, module):
        self.add_module(name, module)

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries().values())

    def append(self, item):
        self._register(str(len(self)), item)
        return self

    def extend(self, items):
        for item in items:
            self.append(item)
        return self


class Sequential(_List):
    """Calls its modules in order. `Sequential(a, b, c)` names them "0", "1", "2";
    `Sequential({"fc": a, "act": b})` keeps the given names."""

    def __init__(self, *modules):
        super().__init__()
        named = len(modules) == 1 and isinstance(modules[0], dict)
        for name, module in (modules[0].items() if named else ((str(i), m) for i, m in enumerate(modules))):
            self.add_module(name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(dict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]


class ModuleList(_List):
    """A list of submodules, registered under "0", "1", ... (no forward: iterate it yourself)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _renumber(self, modules):
        for name in list(self._modules):
            self.__dict__.pop(name, None)
        self._modules.clear()
        self.extend(modules)

    def __getitem__(self, index):
        items = list(self._modules.values())
        return ModuleList(items[index]) if isinstance(index, slice) else items[index]

    def __setitem__(self, index, module):
        self.add_module(str(range(len(self))[index]), module)

    def __delitem__(self, index):
        items = list(self._modules.values())
        del items[index]
        self._renumber(items)

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, module)
        self._renumber(items)


class _Dict(Module):
    """The read side of a dict, shared by ModuleDict and ParameterDict over the registry `_entries()` gives."""

    def __getitem__(self, key):
        return self._entries()[key]

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def __contains__(self, key):
        return key in self._entries()

    def keys(self):
        return self._entries().keys()

    def values(self):
        return self._entries().values()

    def items(self):
        return self._entries().items()


class ModuleDict(_Dict):
    """A dict of submodules registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def _entries(self):
        return self._modules

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        self._unregister(key)
        del self.__dict__[key]

    def update(self, modules):
        for key, module in dict(modules).items():
            self.add_module(key, module)


class ParameterList(_List):
    """A list of parameters registered under "0", "1", ..."""

    def __init__(self, parameters=()):
        super().__init__()
        self.extend(parameters)

    def _entries(self):
        return self._parameters

    def _register(self, name, param):
        self.register_parameter(name, param if isinstance(param, Parameter) else Parameter(param))

    def __getitem__(self, index):
        return list(self._parameters.values())[index]


class ParameterDict(_Dict):
    """A dict of parameters registered under their keys."""

    def __init__(self, parameters=None):
        super().__init__()
        for key, param in dict(parameters or {}).items():
            self[key] = param

    def _entries(self):
        return self._parameters

    def __setitem__(self, key, param):
        self.register_parameter(key, param if isinstance(param, Parameter) else Parameter(param))
