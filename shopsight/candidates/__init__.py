"""Model families behind one interface (see shopsight/candidates/base.py)."""

from shopsight.candidates.base import (
    CANDIDATE_FILE,
    FAMILY_MODULES,
    Candidate,
    available,
    candidate_family,
    champion_vs_references,
    get_model,
    load_candidate,
    paired_bootstrap_se,
    reference_unless_beaten,
    register,
    save_candidate,
    select_champion,
)

__all__ = [
    "CANDIDATE_FILE",
    "FAMILY_MODULES",
    "Candidate",
    "available",
    "candidate_family",
    "champion_vs_references",
    "get_model",
    "load_candidate",
    "paired_bootstrap_se",
    "reference_unless_beaten",
    "register",
    "save_candidate",
    "select_champion",
]
