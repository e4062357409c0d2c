"""The demo's objects: two Services, an analysis template, and the canary Rollout."""

from __future__ import annotations

import sys
from typing import Any

Obj = dict[str, Any]

APP = "rollouts-demo"


def services(stable_port: int, canary_port: int) -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP},
            "spec": {"selector": {"app": APP}, "ports": [{"port": stable_port}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{APP}-canary"},
            "spec": {"selector": {"app": APP}, "ports": [{"port": canary_port}]},
        },
    ]


def error_rate_template(*, prometheus: str | None, admin_port: int, interval: str, initial_delay: str) -> Obj:
    """Canary error rate below 5 %: from Prometheus when there is one, else from the proxy's /stats."""
    if prometheus is not None:
        selector = 'service="{{args.service}}",revision="{{args.canary-hash}}"'
        provider: Obj = {
            "prometheus": {
                "address": prometheus,
                "query": (
                    f'(sum(rate(rollouts_proxy_requests_total{{{selector},code=~"5.."}}[10s])) or vector(0))'
                    f" / sum(rate(rollouts_proxy_requests_total{{{selector}}}[10s]))"
                ),
            }
        }
        condition = "result[0] < 0.05"
    else:
        provider = {
            "web": {
                "url": f"http://127.0.0.1:{admin_port}/stats/{{{{args.service}}}}",
                "jsonPath": "{$.revisions.{{args.canary-hash}}.error_rate}",
            }
        }
        condition = "result < 0.05"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "args": [{"name": "service"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": interval,
                    "initialDelay": initial_delay,
                    "count": 3,
                    "failureLimit": 0,
                    "successCondition": condition,
                    "provider": provider,
                }
            ],
        },
    }


def rollout(image: str, *, pause: str) -> Obj:
    analysis = {
        "templates": [{"templateName": "error-rate"}],
        "args": [
            {"name": "service", "value": APP},
            {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        ],
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": APP},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "command": [sys.executable, "-m", "rollouts.demo.app"],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
            "strategy": {
                "canary": {
                    "stableService": APP,
                    "canaryService": f"{APP}-canary",
                    "steps": [
                        {"setWeight": 20},
                        {"pause": {"duration": pause}},
                        {"analysis": analysis},
                        {"setWeight": 50},
                        {"pause": {}},
                    ],
                }
            },
        },
    }
