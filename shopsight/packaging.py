"""`bentoml build` of the service with the champion models (no Docker needed; containerize is documented)."""

from __future__ import annotations

from pathlib import Path

from shopsight.config import PROJECT_ROOT


def build_bento(project_root: Path = PROJECT_ROOT) -> str:
    """Build the bento from bentos/bentofile.yaml with the project root as build context; return its tag."""
    import bentoml

    bento = bentoml.bentos.build_bentofile(str(project_root / "bentos" / "bentofile.yaml"), build_ctx=str(project_root))
    return str(bento.tag)
