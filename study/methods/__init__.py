"""Merge methods: one module per method family, each a pure tensor function registered by name.

Importing this package is cheap; the registry imports a method's module only when it is used.
"""

from study.methods.registry import get_method, method_names
from study.methods.schema import MethodInfo, Param, merge_method

__all__ = ["MethodInfo", "Param", "get_method", "merge_method", "method_names"]
