"""The optimizer base class: parameter groups over flat buffers.

Speed comes from layout. When a group is added, its parameters are copied into one contiguous
buffer and every parameter's `.data` becomes a view into it, so modules keep working unchanged;
the optimizer state (moments, accumulators) lives in flat buffers of the same layout. A step
gathers all gradients into one flat gradient buffer with a single concatenate and updates every
parameter with a handful of in-place ufuncs, however many parameter tensors there are.

Semantics follow PyTorch: a parameter whose `.grad` is None is not updated and its state (step
count, moments) does not advance. Such steps update the contiguous runs of parameters that do
have gradients, one run at a time. Every updated parameter's `_version` is bumped, so a graph
built before the step refuses to backpropagate through the stale values.

Parameter ownership, one rule for every trainer (as in PyTorch): the module owns its parameters,
the Tensor objects that `state_dict`, `load_state_dict` and `to` work on; the optimizer holds
references to them. Move the model first (`model.to(device / dtype)`), then build the optimizer.
The optimizer only lays the values out: it copies them into its flat buffer and points each
parameter's `.data` at its slice, so the parameters stay the same objects and modules keep working.
Change values in place afterwards (`load_state_dict`, `p.data[...] = ...`). A `.data` replaced by
another array is noticed at the next step: one of the same shape, dtype and device is copied into
the buffer; one on another device or of another dtype (`model.to(...)` after the optimizer was built)
stops the step with one line that says so. `share_memory_()` moves the buffers into shared memory,
for optimizers in several processes that update one model (A3C).
"""
import contextlib
import ctypes
import multiprocessing

import numpy as np

from core import backend
from core.autograd import enable_grad
from core.tensor import Tensor


class _FlatGroup:
    """Storage of one parameter group: parameters, gradients, per-element state and per-parameter
    scalar state (step counts and the like), all flat."""

    __slots__ = ("index", "params", "views", "sizes", "offsets", "xp", "param", "grad", "tmp", "state",
                 "scalars", "uniform", "shared")

    def __init__(self, index, params, state_init, scalar_init):
        self.index = index
        self.params = params
        first = params[0].data
        for k, p in enumerate(params):
            if type(p.data) is not type(first) or backend.device_of(p.data) != backend.device_of(first):
                raise ValueError(f"parameter group {index}: parameter {k} is on {p.device} but parameter 0 is on "
                                 f"{backend.device_of(first)}; put parameters of different devices in separate groups")
            if p.dtype != first.dtype:
                raise ValueError(f"parameter group {index}: parameter {k} has dtype {p.dtype} but parameter 0 has "
                                 f"{first.dtype}; put parameters of different dtypes in separate groups")
        self.xp = xp = backend.get_array_module(first)
        self.sizes = np.array([p.data.size for p in params], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        with _device_of(first):
            self.param = xp.concatenate([p.data for p in params], axis=None)
        self.shared = None  # name -> (shared memory block, dtype, shape) once in shared memory
        self.make_scratch()
        self.state = {}
        self.sync_state(state_init)
        self.point_params()
        self.scalars = {"step": np.zeros(len(params), dtype=np.int64)}
        self.scalars.update({name: np.full(len(params), init, dtype=np.float64) for name, init in scalar_init.items()})
        self.uniform = True  # every parameter has the same scalar state, so coefficients are plain floats

    def make_scratch(self):
        """The gradient and scratch buffers: every process has its own."""
        with _device_of(self.param):
            self.grad = self.xp.empty_like(self.param)
            self.tmp = self.xp.empty_like(self.param)

    def point_params(self):
        """Make every parameter's `.data` a view of its slice of the flat buffer."""
        self.views = []
        for p, start, stop in zip(self.params, self.offsets, self.offsets[1:]):
            view = self.param[start:stop].reshape(p.shape)
            p.data = view
            self.views.append(view)

    def share_memory_(self, ctx):
        """Move the parameters, the state buffers and the scalar state into shared memory blocks of `ctx`."""
        if self.xp is not np:
            raise ValueError(f"parameter group {self.index} is on {backend.device_of(self.param)}; only CPU "
                             "parameters can be shared between processes")
        self.shared = {}

        def move(name, array):
            block = ctx.RawArray(ctypes.c_byte, max(array.nbytes, 1))
            self.shared[name] = (block, array.dtype, array.shape)
            view = _view(block, array.dtype, array.shape)
            view[...] = array
            return view

        self.param = move("param", self.param)
        self.state = {name: move("state/" + name, buf) for name, buf in self.state.items()}
        self.scalars = {name: move("scalars/" + name, v) for name, v in self.scalars.items()}
        self.point_params()

    def __getstate__(self):
        """Pickled (to start a process, or by deepcopy) with its parameters; a shared group sends its shared
        memory blocks, not copies, so that the other process updates the same values."""
        skip = {"xp", "views", "grad", "tmp"} | ({"param", "state", "scalars"} if self.shared else set())
        return {name: getattr(self, name) for name in self.__slots__ if name not in skip}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)
        if self.shared:
            arrays = {name: _view(*spec) for name, spec in self.shared.items()}
            self.param = arrays.pop("param")
            self.state = {name.removeprefix("state/"): v for name, v in arrays.items() if name.startswith("state/")}
            self.scalars = {name.removeprefix("scalars/"): v for name, v in arrays.items()
                            if name.startswith("scalars/")}
        self.xp = backend.get_array_module(self.param)
        self.make_scratch()
        self.point_params()

    def sync_state(self, wanted):
        """Make the state buffers exactly `wanted` (name -> initial value): a hyperparameter change
        (e.g. momentum turned on by a scheduler) can call for a buffer, which starts at its initial value."""
        if wanted.keys() != self.state.keys():
            if self.shared:
                raise RuntimeError(f"parameter group {self.index} needs optimizer state {sorted(wanted)} but was "
                                   f"shared with {sorted(self.state)}; set its options before share_memory_()")
            with _device_of(self.param):
                self.state = {name: self.state[name] if name in self.state else self.xp.full_like(self.param, init)
                              for name, init in wanted.items()}

    def adopt(self, k):
        """Parameter k's `.data` was replaced: copy its new values into the buffer and point it back."""
        p, view = self.params[k], self.views[k]
        if p.shape != view.shape or p.dtype != view.dtype or backend.device_of(p.data) != backend.device_of(view):
            raise RuntimeError(
                f"parameter {k} of group {self.index} was replaced by an array of shape {p.shape}, dtype {p.dtype} on "
                f"{p.device}; the optimizer holds shape {view.shape}, dtype {view.dtype} on "
                f"{backend.device_of(view)}. Build the optimizer after model.to(...)")
        view[...] = p.data
        p.data = view


def _view(block, dtype, shape):
    """A numpy array of `dtype` and `shape` over a shared memory block."""
    return np.frombuffer(block, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _device_of(array):
    """Context that allocates cupy arrays on `array`'s GPU (nothing to do for numpy)."""
    return contextlib.nullcontext() if isinstance(array, np.ndarray) else array.device


class Optimizer:
    """Base class. Subclasses set `defaults` (hyperparameters), `state_init` (per-element state
    buffers and their initial values), `scalar_init` (per-parameter scalar state beyond the step
    count), and implement `_coefficients` and `_update`."""

    state_init = {}
    scalar_init = {}

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a single Tensor; "
                            "wrap it in a list")
        self.defaults = dict(defaults)
        self.param_groups = []
        self._flats = []
        self._seen = set()
        self._lock = None  # shared optimizers advance their step counts under this lock
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _state_names(self, group):
        """Names of the per-element state buffers a group needs (some depend on its options)."""
        return dict(self.state_init)

    def _check(self, group):
        """Raise ValueError for invalid hyperparameters in `group`."""

    def add_param_group(self, param_group):
        """Add a group: a dict with "params" and optional per-group hyperparameters."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {type(param_group).__name__}")
        if self._lock is not None:
            raise RuntimeError("this optimizer is in shared memory; add parameter groups before share_memory_()")
        params = param_group.get("params")
        params = [params] if isinstance(params, Tensor) else list(params or ())
        if not params:
            raise ValueError(f"parameter group {len(self.param_groups)} has no parameters")
        ids = set()
        for k, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"the optimizer can only optimize Tensors, but parameter {k} of group "
                                f"{len(self.param_groups)} is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"parameter {k} of group {len(self.param_groups)} is not a leaf tensor (it has a "
                                 "grad_fn); optimize the leaf it was computed from")
            if p.dtype.kind != "f":
                raise ValueError(f"parameter {k} of group {len(self.param_groups)} has dtype {p.dtype}; "
                                 "only floating-point tensors can be optimized")
            if id(p) in ids or id(p) in self._seen:
                raise ValueError(f"parameter {k} of group {len(self.param_groups)} appears more than once "
                                 "in the optimizer")
            ids.add(id(p))
        group = {**self.defaults, **param_group, "params": params}
        self._check(group)
        flat = _FlatGroup(len(self.param_groups), params, self._state_names(group), self.scalar_init)
        self._seen |= ids
        self.param_groups.append(group)
        self._flats.append(flat)

    def share_memory_(self, ctx=None):
        """Move the parameters' values, the optimizer state and the step counts into shared memory, as
        PyTorch's `Tensor.share_memory_`, and return self. Passed to processes started with `ctx` (a
        multiprocessing context, by default multiprocessing's), the optimizer is the same one there: its
        parameters are views of the shared values, and every process's `step` updates them and the state
        in place without waiting for the others (Hogwild!, Recht et al. 2011: a racing process may now and
        then overwrite another's update). The step counts advance under a lock, so none is lost. Every
        process keeps its own gradient buffer and learning rates (`param_groups`). CPU parameters only."""
        if self._lock is None:
            ctx = ctx or multiprocessing.get_context()
            for flat in self._flats:
                flat.share_memory_(ctx)
            self._lock = ctx.Lock()
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_seen"]  # ids: meaningless in another process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._seen = {id(p) for group in self.param_groups for p in group["params"]}

    def zero_grad(self, set_to_none=True):
        """Clear the gradients: set them to None (default), or to zero arrays."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:  # a new array: the old grad may be a read-only broadcast view
                    p.grad = Tensor._make(p.xp.zeros_like(p.data))

    def step(self, closure=None):
        """One update of every parameter that has a gradient. `closure` (optional) re-evaluates
        the model and returns the loss, which `step` returns."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group, flat in zip(self.param_groups, self._flats):
            self._step_group(group, flat)
        return loss

    def _step_group(self, group, flat):
        grads = []
        complete = True
        for k, (p, view) in enumerate(zip(flat.params, flat.views)):
            if p.data is not view:
                flat.adopt(k)
            g = p.grad
            if g is None:
                complete = False
                grads.append(None)
            else:
                grads.append(g.data)
                p._version += 1
        flat.sync_state(self._state_names(group))
        xp = flat.xp
        if complete:
            runs = ((0, len(grads)),)
        else:
            present = np.array([g is not None for g in grads])
            edges = np.flatnonzero(np.diff(np.concatenate([[False], present, [False]]).astype(np.int8)))
            runs = tuple(zip(edges[::2].tolist(), edges[1::2].tolist()))
        for first, last in runs:
            start, stop = flat.offsets[first], flat.offsets[last]
            xp.concatenate(grads[first:last], axis=None, out=flat.grad[start:stop])
            coefficients = self._advance(group, flat, first, last)
            self._update(group, flat.param[start:stop], flat.grad[start:stop],
                         {name: buf[start:stop] for name, buf in flat.state.items()}, coefficients,
                         flat.tmp[start:stop])
        if not (complete and flat.uniform):
            flat.uniform = all(v.min() == v.max() for v in flat.scalars.values())

    def _advance(self, group, flat, first, last):
        """Advance the scalar state of parameters first..last-1 by one step; return the update
        coefficients: floats when those parameters share their scalar state, else per-element arrays."""
        if self._lock is None:
            return self._advance_scalars(group, flat, first, last, flat.uniform)
        with self._lock:  # other processes advance the same counts; whether they stayed uniform is read anew
            return self._advance_scalars(group, flat, first, last, False)

    def _advance_scalars(self, group, flat, first, last, uniform):
        if uniform:
            scalars = {name: v[first].item() for name, v in flat.scalars.items()}
        else:
            scalars = {name: v[first:last].copy() for name, v in flat.scalars.items()}
            if all(v.min() == v.max() for v in scalars.values()):
                scalars = {name: v[0].item() for name, v in scalars.items()}
        scalars["step"] += 1
        coefficients = self._coefficients(group, scalars)
        for name, v in flat.scalars.items():
            v[first:last] = scalars[name]
        if all(not isinstance(c, np.ndarray) for c in coefficients.values()):
            return coefficients
        sizes = flat.sizes[first:last]
        dtype = flat.param.dtype
        with _device_of(flat.param):
            return {name: flat.xp.asarray(np.repeat(c, sizes).astype(dtype)) if isinstance(c, np.ndarray) else c
                    for name, c in coefficients.items()}

    def _coefficients(self, group, scalars):
        """Per-step coefficients from the group's hyperparameters and the (already advanced)
        scalar state; written with arithmetic that works on floats and numpy vectors alike."""
        return {}

    def _update(self, group, param, grad, state, c, tmp):
        """Update flat `param` in place from flat `grad` (which may be overwritten), the state
        buffers, coefficients `c` and a scratch buffer `tmp`."""
        raise NotImplementedError

    # ----- checkpoints -----
    def state_dict(self):
        """Hyperparameters and state as plain data (copies), restorable with `load_state_dict`
        into a fresh optimizer over a model of the same architecture."""
        index = 0
        groups = []
        for group in self.param_groups:
            n = len(group["params"])
            hyper = {k: v for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": list(range(index, index + n))})
            index += n
        return {
            "type": type(self).__name__,
            "param_groups": groups,
            "param_shapes": [[tuple(p.shape) for p in group["params"]] for group in self.param_groups],
            "state": [{**{name: v.copy() for name, v in flat.scalars.items()},
                       **{name: buf.copy() for name, buf in flat.state.items()}} for flat in self._flats],
        }

    def load_state_dict(self, state_dict):
        """Restore `state_dict()` output. Everything is checked before anything changes, so a
        mismatch raises and leaves this optimizer as it was."""
        try:
            kind, groups, shapes, states = (state_dict[k] for k in ("type", "param_groups", "param_shapes", "state"))
        except (KeyError, TypeError):
            raise ValueError("not an optimizer state dict: expected the keys 'type', 'param_groups', "
                             "'param_shapes' and 'state'") from None
        if kind != type(self).__name__:
            raise ValueError(f"the state dict is from a {kind} optimizer, this one is {type(self).__name__}")
        if len(groups) != len(self.param_groups) or len(states) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        for i, (flat, saved_shapes, state) in enumerate(zip(self._flats, shapes, states)):
            own = [tuple(p.shape) for p in flat.params]
            if [tuple(s) for s in saved_shapes] != own:
                raise ValueError(f"parameter group {i}: the state dict holds parameters of shapes "
                                 f"{list(saved_shapes)}, this optimizer has {own}")
            wanted = set(flat.scalars) | set(self._state_names({**self.param_groups[i], **groups[i]}))
            if set(state) != wanted:
                raise ValueError(f"parameter group {i}: the state dict holds state {sorted(state)}, this optimizer "
                                 f"needs {sorted(wanted)}")
            for name in flat.scalars:
                if np.shape(state[name]) != (len(own),):
                    raise ValueError(f"parameter group {i}: state {name!r} has shape {np.shape(state[name])}, "
                                     f"expected ({len(own)},)")
            for name in wanted - set(flat.scalars):
                if np.shape(state[name]) != flat.param.shape:
                    raise ValueError(f"parameter group {i}: state {name!r} has shape {np.shape(state[name])}, "
                                     f"expected {flat.param.shape}")
        for group, flat, saved, state in zip(self.param_groups, self._flats, groups, states):
            group.update({k: v for k, v in saved.items() if k != "params"})
            flat.sync_state(self._state_names(group))
            for name, v in flat.scalars.items():
                v[...] = backend.to_device(state[name], "cpu")
            for name, buf in flat.state.items():
                buf[...] = backend.to_device(state[name], backend.device_of(buf))
            flat.uniform = all(v.min() == v.max() for v in flat.scalars.values())

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} tensors, {hyper}")
        return "\n".join(lines + [")"])
