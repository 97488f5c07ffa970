"""The local order service: the cloud orchestrator that turns order requests into orders."""
