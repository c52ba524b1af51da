"""Method registry: one class per ``methods.<m>.type`` answering what the workflow needs to know about a method
(training jobs, evaluation points, adapters, baselines, tables and figures, config checks). See docs/design.md,
"Method registry"."""
from mva_core.methods import types as _types  # noqa: F401  (registers the method types)
from mva_core.methods.base import (
    DEFAULT_TYPE,
    METHOD_TYPES,
    Method,
    method_class,
    method_for,
    method_from_section,
    register_method,
)
from mva_core.methods.chains import INDEPENDENT, ModpoJob, VectorJob, value_order
from mva_core.methods.plan import MethodPlan

__all__ = ["DEFAULT_TYPE", "INDEPENDENT", "METHOD_TYPES", "Method", "MethodPlan", "ModpoJob", "VectorJob",
           "method_class", "method_for", "method_from_section", "register_method", "value_order"]
