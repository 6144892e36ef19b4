"""Legal-RAG hallucination audit (Magesh et al. 2024): systems under test answer legal
queries; each answer is graded for correctness and groundedness, automatically."""

from conclave.agents.legal_audit.config import AuditConfig, AuditError, SystemSpec
from conclave.agents.legal_audit.grade import Grade, Grader
from conclave.agents.legal_audit.queries import CATEGORIES, Query, generate, load_queries
from conclave.agents.legal_audit.trace import AuditItem, AuditResult

__all__ = ["AuditConfig", "AuditError", "SystemSpec", "Grade", "Grader", "CATEGORIES", "Query", "generate",
           "load_queries", "AuditItem", "AuditResult"]
