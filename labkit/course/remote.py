"""The narrow interface between the trusted checker kernel and the learner's kernel.

Grading runs two kernels per submission (:mod:`labkit.course.sandbox`). The checker runs the
lesson's trusted cells and its tests and never executes learner code; every learner name a
test reads is bound in the checker by :func:`bind`, which asks the learner's kernel for it
over the Jupyter protocol (the learner kernel's connection file, read-only in the checker's
sandbox, on the worker's private loopback). The learner kernel answers in
:func:`labkit.course.learner_side.serve`.

What crosses, and what it becomes in the checker:

* **data** (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, lists, tuples, sets,
  dicts with string keys, NumPy arrays and torch tensors as ``.npy`` bytes read with
  ``allow_pickle=False``): checker-native objects, with sizes and depth capped. Never a proxy
  whose ``__eq__``/``__bool__``/``__float__`` would run learner code, never pickle;
* **labkit dataclasses and named tuples** (a ``Scope``, a ``Message``, a ``LabData``): their
  fields, rebuilt with the receiver's own class through its constructor, which validates them;
  a class outside labkit (or in ``labkit.course``), an unknown field or a refused value is an
  error, never an object;
* **labkit objects with behaviour that describe their state** (a ``GuardedModel``, a
  ``DriftMonitor``, a ``PredictionAPI`` that have served nothing yet; the class declares
  ``_grading_fields`` and ``_grading_state``): their constructor arguments, rebuilt with the
  checker's own class, whose code then serves and computes the verdict; a callable among them
  (the learner's model) is a call proxy. Any other state, an unknown field, a look-alike class
  or arguments the constructor refuses never become such an object;
* **functions and classes**: call proxies. Arguments go over as data; objects the checker made
  in a trusted cell and that the learner's kernel has under the same name (a zoo model, a data
  set) go *by reference* to the learner kernel's object of that name; modules made only of
  ``torch.nn``/``labkit`` classes go as their structure and tensors; any other object a test
  made (its function or lambda, a ``functools.partial``, a fake clock, a labkit object) stays in
  the checker and learner code gets a stand-in whose calls call back into the checker: the
  learner's call runs in a worker thread of its kernel, which hands each call-back over as its
  reply and waits for the checker's ``resume``. The call runs with the checker's random-number
  state, the result comes back as data, objects the checker passed come back as themselves, and
  tensors, arrays and modules that the call changed in place are changed in the checker too;
* **an exception**: re-raised in the checker as the nearest allowlisted builtin or ``labkit``
  exception class in its hierarchy, message capped (``expect_raises`` keeps working);
* **an ``nn.Module``**: rebuilt from its structure when every class in it is a ``torch.nn`` or
  ``labkit`` class (the checker's own code then runs it), otherwise a :class:`RemoteModule`
  whose forward pass and vector-Jacobian products are computed by the learner's kernel;
* **anything else**: a :class:`RemoteObject` whose attributes, items and calls are fetched the
  same way; it refuses to be used as a truth value.

Learner code may replace :func:`~labkit.course.learner_side.serve` in its own kernel: that
changes only the values it returns, which the checker's tests still check.

The interface lives in five modules, one job each; this one is the checker's entry point (the
checker kernel calls ``labkit.course.remote.bind``) and re-exports their public names:

* :mod:`labkit.course.codec`: what crosses and how (both kernels), with its size and depth caps;
* :mod:`labkit.course.learner_side`: the learner kernel's server (runs beside learner code,
  trusted by nobody);
* :mod:`labkit.course.checker_side`: the checker's connection to it (:class:`Peer`), what the
  checker hands to learner code, and :func:`bind`;
* :mod:`labkit.course.proxies`: the checker's stand-ins for learner objects that do not cross
  as data;
* :mod:`labkit.course.rng`: the random state that goes with each call, and what the checker
  takes back of it.
"""

from __future__ import annotations

from labkit.course.checker_side import Peer, bind, peer
from labkit.course.codec import CodecError, RemoteError
from labkit.course.proxies import RemoteFunction, RemoteModule, RemoteObject

__all__ = [
    "CodecError",
    "Peer",
    "RemoteError",
    "RemoteFunction",
    "RemoteModule",
    "RemoteObject",
    "bind",
    "peer",
]
