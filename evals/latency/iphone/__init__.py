"""On-device latency: the Swift benchmark (SnapGenBench/) and its Python orchestrator."""
