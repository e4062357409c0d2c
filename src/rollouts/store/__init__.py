"""Object stores: resources with resource versions, change feeds and events."""
