"""`rollouts lint`: load findings plus every validation rule, over a set of documents.

The CLI loads files with `manifests.load_files`, hands the documents here, prints each finding
on its own line and then `LintReport.summary()`, and exits 1 when there is any error. What a
rollout refers to is looked up among the documents themselves and, when the caller passes
them, the names already in the store; the objects in the documents are also checked against
each other (Service selectors, template arguments and metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.findings import unknown_fields
from rollouts.model.manifests import Finding, LoadedDocument
from rollouts.model.rollout import Rollout
from rollouts.model.service import Secret, Service
from rollouts.model.validate_analysis import validate_analysis_run, validate_analysis_template
from rollouts.model.validate_references import validate_references
from rollouts.model.validation import (
    KnownObjects,
    validate_rollout,
)


@dataclass(frozen=True)
class LintReport:
    findings: list[Finding]
    objects: int
    errors: int
    warnings: int

    @property
    def ok(self) -> bool:
        """True when nothing blocks applying the manifests (warnings allowed)."""
        return self.errors == 0

    def summary(self) -> str:
        """One line, e.g. `3 objects checked: 0 errors, 1 warning`."""
        return (
            f"{_plural(self.objects, 'object')} checked: "
            f"{_plural(self.errors, 'error')}, {_plural(self.warnings, 'warning')}"
        )


def lint_documents(
    docs: Sequence[LoadedDocument],
    load_findings: Sequence[Finding],
    *,
    known_from_store: KnownObjects | None = None,
) -> LintReport:
    """Every finding about `docs`: those from loading, then each object's, in document order."""
    services: dict[str, Service] = {}
    templates: dict[str, AnalysisTemplate] = {}
    cluster_templates: dict[str, ClusterAnalysisTemplate] = {}
    for doc in docs:
        resource = doc.resource
        if isinstance(resource, Service):
            services[resource.metadata.name] = resource
        elif isinstance(resource, AnalysisTemplate):
            templates[resource.metadata.name] = resource
        elif isinstance(resource, ClusterAnalysisTemplate):
            cluster_templates[resource.metadata.name] = resource
    known = KnownObjects(set(services), set(templates), set(cluster_templates)).union(known_from_store)

    findings: list[Finding] = list(load_findings)
    findings.extend(_duplicates(docs))
    for doc in docs:
        resource = doc.resource
        found: list[Finding] = []
        if isinstance(resource, Rollout):
            found = validate_rollout(resource, known=known)
            found += validate_references(
                resource, services=services, templates=templates, cluster_templates=cluster_templates
            )
        elif isinstance(resource, AnalysisTemplate | ClusterAnalysisTemplate):
            found = validate_analysis_template(resource)
        elif isinstance(resource, AnalysisRun):
            found = validate_analysis_run(resource)
        elif isinstance(resource, Service):
            found = _service_findings(resource)
        elif isinstance(resource, Secret):
            found = unknown_fields(resource, kind="Secret", name=resource.metadata.name)
        findings.extend(f.at(doc.source, doc.index) for f in found)
    findings.sort(key=_order(docs, findings))
    errors = sum(1 for f in findings if f.severity == "error")
    return LintReport(findings=findings, objects=len(docs), errors=errors, warnings=len(findings) - errors)


def _service_findings(service: Service) -> list[Finding]:
    name = service.metadata.name
    out: list[Finding] = []
    if service.port() is None:
        out.append(
            Finding(
                "warning",
                "-",
                0,
                "Service",
                name,
                "spec.ports",
                "no port: the embedded platform serves a Service on its first port (add - port: 8080)",
            )
        )
    return out


def _duplicates(docs: Sequence[LoadedDocument]) -> list[Finding]:
    """Warnings for an object defined twice with different content (the last one applied wins)."""
    first: dict[tuple[str, str, str], LoadedDocument] = {}
    out: list[Finding] = []
    for doc in docs:
        if doc.resource is None:
            continue
        key = (doc.resource.kind, doc.resource.metadata.namespace or "", doc.resource.metadata.name)
        seen = first.get(key)
        if seen is None:
            first[key] = doc
            continue
        if seen.raw != doc.raw:
            out.append(
                Finding(
                    "warning",
                    doc.source,
                    doc.index,
                    key[0],
                    key[2],
                    "",
                    f"also defined in {seen.source}:{seen.index} with different content; the last one applied wins",
                )
            )
    return out


def _order(docs: Sequence[LoadedDocument], findings: Sequence[Finding]) -> Callable[[Finding], tuple[int, int]]:
    """Sort by source, then document; stable within one document (rules stay in their order).

    Sources are ranked by merging the order of the documents with the order of the findings
    (each is in reading order, but a file whose YAML is broken has no documents): where the
    two disagree, the name that sorts first goes first, as within a directory.
    """
    by_docs = list(dict.fromkeys(d.source for d in docs))
    by_findings = list(dict.fromkeys(f.source for f in findings))
    ranks: dict[str, int] = {}
    i = j = 0
    while i < len(by_docs) or j < len(by_findings):
        if i < len(by_docs) and by_docs[i] in ranks:
            i += 1
        elif j < len(by_findings) and by_findings[j] in ranks:
            j += 1
        elif j >= len(by_findings) or (i < len(by_docs) and by_docs[i] <= by_findings[j]):
            ranks[by_docs[i]] = len(ranks)
            i += 1
        else:
            ranks[by_findings[j]] = len(ranks)
            j += 1
    return lambda finding: (ranks[finding.source], finding.document)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
