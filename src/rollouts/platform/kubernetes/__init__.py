"""The Kubernetes platform: the same controller as an operator, through the Kubernetes API."""
