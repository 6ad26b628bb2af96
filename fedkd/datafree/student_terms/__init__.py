"""Student-side terms: extra losses on every student step, one module per method (see ``base``)."""

from fedkd.datafree.student_terms.activation import ActivationRegularizer
from fedkd.datafree.student_terms.attention import AttentionTransfer
from fedkd.datafree.student_terms.base import (
    ForwardCapture,
    StudentBatch,
    StudentTerm,
    check_student_terms,
    ordered_terms,
)
from fedkd.datafree.student_terms.interpolation import VirtualInterpolation

__all__ = [
    "ActivationRegularizer", "AttentionTransfer", "ForwardCapture", "StudentBatch", "StudentTerm",
    "VirtualInterpolation", "check_student_terms", "ordered_terms",
]
