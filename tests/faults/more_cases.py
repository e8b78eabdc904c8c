"""Cases beyond delivery: control plane down, gateway overload, fuzz campaigns, security checks."""

from __future__ import annotations

from collections.abc import Callable

from tests.faults.cases import CaseEnv
from tests.faults.harness import CaseResult, Scale

MORE_CASES: dict[str, Callable[[CaseEnv, Scale], CaseResult]] = {}
